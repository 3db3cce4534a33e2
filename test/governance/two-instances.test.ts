import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { openDatabase, type Database } from "../../src/db/connection";
import { migrateToLatest } from "../../src/db/migrate";
import { createPostgresDatabase } from "../helpers/database";
import { describeOnPostgres, JWT_SECRET } from "../helpers/env";
import { connectGrpc, type GrpcConnection } from "../helpers/grpc-client";
import { modelInput, sleep, uniqueUser, type Service } from "../helpers/harness";
import { killSpawned, spawnServer, type SpawnedServer } from "../helpers/spawn";
import { userToken } from "../helpers/tokens";

type Run = { id: number; holder: string; status: string; started_at: Date; finished_at: Date | null; cleaned: number; error: string | null };

describeOnPostgres("two instances on one PostgreSQL", () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let db: Database;
  const connections: GrpcConnection<Service>[] = [];

  beforeAll(async () => {
    database = await createPostgresDatabase();
    db = await openDatabase({ url: database.url });
    await migrateToLatest(db.knex);
  }, 60_000);

  afterAll(async () => {
    connections.forEach((c) => c.close());
    await killSpawned();
    await db?.close();
    await database?.drop();
  });

  const start = (env: Record<string, string>) =>
    Promise.all([0, 1].map(() => spawnServer({ DATABASE_URL: database.url, JWT_SECRET, LOG_LEVEL: "info", MIGRATE_ON_START: "false", ...env }, 60_000)));
  const grpcOf = (s: SpawnedServer) => {
    const c = connectGrpc(VoiceModelService, `127.0.0.1:${s.grpcPort}`);
    connections.push(c);
    return c;
  };

  test("rate limits hold across instances: combined calls stop at the limit", async () => {
    const servers = await start({ RATE_LIMITS_ENABLED: "true", RATE_LIMIT_CREATE: "4/3600", CLEANUP_INTERVAL_MS: "0" });
    try {
      const [a, b] = servers.map(grpcOf);
      const userId = uniqueUser();
      const token = await userToken(userId);
      // Sequential, alternating instances.
      const outcomes: string[] = [];
      for (let i = 0; i < 6; i++) {
        const client = (i % 2 ? a : b).as(token);
        outcomes.push(await client.createVoiceModel(modelInput()).then(() => "ok", (e) => e.errorInfo?.reason ?? String(e)));
      }
      expect(outcomes).toEqual(["ok", "ok", "ok", "ok", "RATE_LIMITED", "RATE_LIMITED"]);
      // Concurrent, both instances at once, for a fresh user.
      const other = await userToken(uniqueUser());
      const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) => (i % 2 ? a : b).as(other).createVoiceModel(modelInput())));
      expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(4);
      const { rows } = await db.knex.raw(`SELECT count(*)::int AS n FROM voice_models WHERE user_id = ?`, [userId]);
      expect(rows[0].n).toBe(4);
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  }, 120_000);

  async function seedEligible(count: number) {
    await db.knex.raw(`INSERT INTO model_owners (user_id) SELECT 'old-' || g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING`);
    await db.knex.raw(
      `INSERT INTO voice_models (user_id, provider, model_path, quality_score, created_at)
       SELECT 'old-' || (g % 100 + 1), 'xtts-v2', 'old/' || g || '/' || random(), 0.1, now() - interval '365 days' FROM generate_series(1, ?) g`,
      [count],
    );
  }
  const runs = async (): Promise<Run[]> => db.knex("cleanup_runs").orderBy("id");
  const liveOld = async () =>
    Number((await db.knex.raw(`SELECT count(*)::int AS n FROM voice_models WHERE user_id LIKE 'old-%' AND deleted_at IS NULL`)).rows[0].n);

  test("the scheduled cleanup runs on one instance at a time, once per interval", async () => {
    await seedEligible(50);
    const servers = await start({ CLEANUP_INTERVAL_MS: "1000", CLEANUP_LEASE_MS: "2000", CLEANUP_BATCH_SIZE: "10" });
    try {
      await sleep(5_500);
      const seen = await runs();
      expect(seen.length).toBeGreaterThanOrEqual(2);
      // About one run per interval for the whole fleet, not one per instance.
      expect(seen.length).toBeLessThanOrEqual(7);
      const finished = seen.filter((r) => r.finished_at);
      for (let i = 1; i < finished.length; i++) {
        expect(finished[i].started_at.getTime()).toBeGreaterThanOrEqual(finished[i - 1].finished_at!.getTime());
      }
      expect(seen.every((r) => r.status !== "failed")).toBe(true);
      expect(seen.reduce((n, r) => n + r.cleaned, 0)).toBe(50);
      expect(await liveOld()).toBe(0);
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  }, 120_000);

  test("a leader that dies midway: its lease lapses and the other instance finishes the job", async () => {
    await db.knex("cleanup_runs").delete();
    await db.knex.raw(`UPDATE job_leases SET holder = NULL, expires_at = '-infinity'`);
    await seedEligible(6_000);
    const servers = await start({ CLEANUP_INTERVAL_MS: "1000", CLEANUP_LEASE_MS: "2000", CLEANUP_BATCH_SIZE: "20" });
    try {
      // Wait until a run has committed some batches, then kill its instance without warning.
      let running: Run | undefined;
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline) {
        running = (await runs()).find((r) => r.status === "running" && r.cleaned > 0);
        if (running) break;
        await sleep(50);
      }
      expect(running).toBeDefined();
      const victim = servers.find((s) => running!.holder.includes(`:${s.pid}:`))!;
      const survivor = servers.find((s) => s !== victim)!;
      await victim.stop("SIGKILL");
      // Killed midway: work was left.
      expect(await liveOld()).toBeGreaterThan(0);

      const until = Date.now() + 60_000;
      while ((await liveOld()) > 0 && Date.now() < until) await sleep(200);
      expect(await liveOld()).toBe(0);
      // The survivor records its run once its pass is over: wait for that record.
      let all = await runs();
      const survivorDone = () => all.some((r) => r.holder.includes(`:${survivor.pid}:`) && r.status === "succeeded");
      for (const end = Date.now() + 10_000; !survivorDone() && Date.now() < end; all = await runs()) await sleep(100);
      const abandoned = all.find((r) => r.id === running!.id)!;
      expect(abandoned).toMatchObject({ status: "failed", error: expect.stringMatching(/abandoned/) });
      const finishedBySurvivor = all.filter((r) => r.holder.includes(`:${survivor.pid}:`) && r.status === "succeeded");
      expect(finishedBySurvivor.length).toBeGreaterThan(0);
      expect(all.reduce((n, r) => n + r.cleaned, 0)).toBe(6_000);
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
    }
  }, 180_000);
});
