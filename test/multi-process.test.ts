// Several server processes on one PostgreSQL database: they migrate together at start-up under
// knex's migration lock, and their concurrent writes keep one active model per user.
import pg from "pg";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { createPostgresDatabase } from "./helpers/database";
import { describeOnPostgres, JWT_SECRET } from "./helpers/env";
import { connectGrpc, GrpcCallError, type GrpcConnection } from "./helpers/grpc-client";
import { uniqueUser } from "./helpers/harness";
import { killSpawned, spawnServer, type SpawnedServer } from "./helpers/spawn";
import { userToken } from "./helpers/tokens";

describeOnPostgres("several server processes on one database", () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let servers: SpawnedServer[] = [];
  let channels: GrpcConnection<typeof VoiceModelService>[] = [];

  beforeAll(async () => {
    database = await createPostgresDatabase();
    // Started together on an empty database: all race to migrate it.
    servers = await Promise.all(
      [1, 2, 3].map(() => spawnServer({ DATABASE_URL: database.url, JWT_SECRET, MIGRATE_ON_START: "true", RATE_LIMITS_ENABLED: "false" }, 180_000)),
    );
    channels = servers.map((s) => connectGrpc(VoiceModelService, `127.0.0.1:${s.grpcPort}`));
  }, 200_000);

  afterAll(async () => {
    channels.forEach((c) => c.close());
    await Promise.all(servers.map((s) => s.stop("SIGTERM")));
    await killSpawned();
    await database?.drop();
  });

  test("each migration was applied exactly once", async () => {
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      const { rows } = await client.query("select name, count(*)::int as n from knex_migrations group by name");
      expect(rows.length).toBeGreaterThan(0);
      for (const row of rows) expect(row).toMatchObject({ n: 1 });
      const lock = await client.query("select is_locked from knex_migrations_lock");
      expect(lock.rows).toEqual([{ is_locked: 0 }]);
    } finally {
      await client.end();
    }
  });

  test("concurrent writes through every process keep exactly one active model", async () => {
    const userId = uniqueUser("multi");
    const token = await userToken(userId);
    const clients = channels.map((c) => c.as(token));
    const models = await Promise.all(
      Array.from({ length: 9 }, (_, i) => clients[i % 3].createVoiceModel({ provider: "xtts-v2", modelPath: `m${i}`, qualityScore: 0.1 + i * 0.05 })),
    ).then((replies) => replies.map((r) => r.message.model!));

    let reading = true;
    const seen: number[] = [];
    const reader = (async () => {
      while (reading) {
        const replies = await Promise.all(clients.map((c) => c.listVoiceModels({ isActive: true })));
        for (const r of replies) seen.push(r.message.models.length);
      }
    })();

    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 60; i++) {
      const client = clients[i % 3];
      const model = models[(i * 7) % models.length];
      if (i % 5 === 4) calls.push(client.createVoiceModel({ provider: "openai-tts", modelPath: `n${i}`, qualityScore: (i % 10) / 10 }));
      else calls.push(client.activateVoiceModel({ modelId: model.id }).catch((e) => {
        // Already active is a valid answer for a model another process just activated.
        if (!(e instanceof GrpcCallError && e.errorInfo?.reason === "ALREADY_ACTIVE")) throw e;
      }));
    }
    try {
      await Promise.all(calls);
    } catch (error) {
      // Say why: the servers' error log lines.
      const logs = servers.flatMap((s) => s.output().stdout.split("\n").filter((l) => l.includes('"level":50')));
      throw new Error(`${(error as Error).message}\n${logs.slice(0, 5).join("\n")}`);
    } finally {
      reading = false;
      await reader;
    }

    expect(seen.length).toBeGreaterThan(0);
    expect(Math.max(...seen)).toBe(1);
    for (const client of clients) {
      const { message } = await client.listVoiceModels({ isActive: true });
      expect(message.models).toHaveLength(1);
    }
  });

  test("every process stops gracefully on SIGTERM", async () => {
    const codes = await Promise.all(servers.map((s) => s.stop("SIGTERM")));
    expect(codes).toEqual([0, 0, 0]);
  });
});
