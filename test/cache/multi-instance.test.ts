import pg from "pg";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { LISTENER_APPLICATION_NAME } from "../../src/db/notifications";
import { openDatabase } from "../../src/db/connection";
import { migrateToLatest } from "../../src/db/migrate";
import { createPostgresDatabase } from "../helpers/database";
import { describeOnPostgres, JWT_SECRET } from "../helpers/env";
import { connectGrpc, type GrpcClient, type GrpcConnection } from "../helpers/grpc-client";
import { modelInput, sleep, uniqueUser } from "../helpers/harness";
import { killSpawned, spawnServer, type SpawnedServer } from "../helpers/spawn";
import { serviceToken, userToken } from "../helpers/tokens";
import { usageInput } from "../usage/helpers";

type Client = GrpcClient<typeof VoiceModelService>;

/** Two server processes on one PostgreSQL database. */
describeOnPostgres("caches across two instances", () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let admin: pg.Client;
  const servers: SpawnedServer[] = [];
  const connections: GrpcConnection<typeof VoiceModelService>[] = [];
  let tts: { a: Client; b: Client };

  async function clientsFor(token: string) {
    return { a: connections[0].as(token), b: connections[1].as(token) };
  }

  async function listenerCount(): Promise<number> {
    const { rows } = await admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND datname = $2`, [
      LISTENER_APPLICATION_NAME,
      database.name,
    ]);
    return rows[0].n;
  }

  beforeAll(async () => {
    database = await createPostgresDatabase();
    const db = await openDatabase({ url: database.url });
    await migrateToLatest(db.knex);
    await db.close();
    admin = new pg.Client({ connectionString: database.url });
    await admin.connect();
    const env = { DATABASE_URL: database.url, JWT_SECRET, LOG_LEVEL: "info", MIGRATE_ON_START: "false" };
    servers.push(...(await Promise.all([spawnServer(env), spawnServer(env)])));
    for (const s of servers) connections.push(connectGrpc(VoiceModelService, `127.0.0.1:${s.grpcPort}`));
    tts = await clientsFor(await serviceToken());
    // Both instances are listening.
    const deadline = Date.now() + 10_000;
    while ((await listenerCount()) < 2 && Date.now() < deadline) await sleep(50);
  }, 90_000);

  afterAll(async () => {
    connections.forEach((c) => c.close());
    await Promise.all(servers.map((s) => s.stop()));
    await killSpawned();
    await admin?.end();
    await database?.drop();
  });

  test("the cache tables never serve a value older than a write committed on the other instance", async () => {
    const userId = uniqueUser();
    const c = await clientsFor(await userToken(userId));
    const model = (await c.a.createVoiceModel(modelInput({ qualityScore: 0.4 }))).message.model!;
    for (let round = 0; round < 5; round++) {
      // Instance B reads (and caches) everything ...
      await c.b.getVoiceModel({ modelId: model.id });
      await c.b.listVoiceModels({});
      await c.b.getVoiceModelAnalytics({});
      await c.b.getVoiceModelUsageStats({ modelId: model.id });
      // ... A writes ...
      const score = 0.5 + round / 100;
      await c.a.updateVoiceModel({ modelId: model.id, qualityScore: score });
      await tts.a.recordUsage(usageInput(model.id, userId, { latencyMs: 100 }));
      // ... and B's very next reads see the writes (no waiting).
      expect((await c.b.getVoiceModel({ modelId: model.id })).message.model!.qualityScore).toBe(score);
      expect((await c.b.listVoiceModels({})).message.models[0].qualityScore).toBe(score);
      expect((await c.b.getVoiceModelAnalytics({})).message).toMatchObject({ averageQualityScore: score, totalUsageCount: round + 1 });
      expect((await c.b.getVoiceModelUsageStats({ modelId: model.id })).message.usageCount).toBe(round + 1);
    }
  });

  test("reads racing writes on the other instance never leave a stale cache row behind", async () => {
    const userId = uniqueUser();
    const c = await clientsFor(await userToken(userId));
    const model = (await c.a.createVoiceModel(modelInput({ qualityScore: 0.1 }))).message.model!;
    let stop = false;
    // Readers on both instances hammer the cached model while A updates it (updates are rate
    // limited per user, hence only 15).
    const readers = [c.a, c.b].map(async (client) => {
      while (!stop) await client.getVoiceModel({ modelId: model.id });
    });
    for (let i = 1; i <= 15; i++) await c.a.updateVoiceModel({ modelId: model.id, qualityScore: 0.1 + i / 100 });
    stop = true;
    await Promise.all(readers);
    for (const client of [c.a, c.b]) expect((await client.getVoiceModel({ modelId: model.id })).message.model!.qualityScore).toBeCloseTo(0.25, 3);
  });

  test("the in-process cache (active model, list pages): the writer is never stale, the other drops it within 100 ms", async () => {
    const userId = uniqueUser();
    const c = await clientsFor(await userToken(userId));
    const first = (await c.a.createVoiceModel(modelInput({ qualityScore: 0.5 }))).message.model!;
    const second = (await c.a.createVoiceModel(modelInput({ qualityScore: 0.6 }))).message.model!;
    // What each read answers: the active model's id, and the id the list puts first (the active one).
    const reads = {
      active: async (client: Client) => (await client.getActiveVoiceModel({})).message.model?.id,
      listed: async (client: Client) => (await client.listVoiceModels({ limit: 1 })).message.models[0]?.id,
    };
    for (let round = 0; round < 6; round++) {
      const [writer, other] = round % 2 === 0 ? [c.a, c.b] : [c.b, c.a];
      const target = round % 2 === 0 ? second : first;
      // Both instances have the current answers cached.
      for (const read of Object.values(reads)) {
        await read(writer);
        await read(other);
      }
      await writer.activateVoiceModel({ modelId: target.id });
      for (const read of Object.values(reads)) expect(await read(writer)).toBe(target.id);
      const started = Date.now();
      for (const read of Object.values(reads)) {
        while ((await read(other)) !== target.id) {
          expect(Date.now() - started).toBeLessThan(100);
          await sleep(5);
        }
      }
    }
  });

  test("after losing its LISTEN connection an instance drops its whole in-process cache", async () => {
    const userId = uniqueUser();
    const c = await clientsFor(await userToken(userId));
    const model = (await c.a.createVoiceModel(modelInput({ qualityScore: 0.5 }))).message.model!;
    expect((await c.b.getActiveVoiceModel({})).message.model!.qualityScore).toBe(0.5);
    // A change no instance hears about (written behind the service's back: no NOTIFY) ...
    await admin.query(`UPDATE voice_models SET quality_score = 0.7 WHERE id = $1`, [model.id]);
    // ... is not seen while B's cache holds the entry (the cache really serves) ...
    expect((await c.b.getActiveVoiceModel({})).message.model!.qualityScore).toBe(0.5);
    // ... and once the LISTEN connections drop, B may not serve from its old entries again.
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND datname = $2`, [
      LISTENER_APPLICATION_NAME,
      database.name,
    ]);
    const started = Date.now();
    while ((await c.b.getActiveVoiceModel({})).message.model!.qualityScore !== 0.7) {
      expect(Date.now() - started).toBeLessThan(1_000);
      await sleep(10);
    }
    // The listeners come back, and invalidation by NOTIFY works again.
    const deadline = Date.now() + 10_000;
    while ((await listenerCount()) < 2) {
      expect(Date.now()).toBeLessThan(deadline);
      await sleep(50);
    }
    await c.b.getActiveVoiceModel({});
    await c.b.getActiveVoiceModel({});
    await c.a.updateVoiceModel({ modelId: model.id, qualityScore: 0.9 });
    const again = Date.now();
    while ((await c.b.getActiveVoiceModel({})).message.model!.qualityScore !== 0.9) {
      expect(Date.now() - again).toBeLessThan(100);
      await sleep(5);
    }
  });
});
