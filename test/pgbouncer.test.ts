// The service behind PgBouncer in transaction pooling mode (as production runs it): every query
// goes through the pooler, which hands each transaction whatever server connection is free, so
// nothing may rely on session state; only the LISTEN connection goes to PostgreSQL directly.
import pg from "pg";
import { LISTENER_APPLICATION_NAME } from "../src/db/notifications";
import { ConfigError, parseConfig } from "../src/config";
import { openDatabase } from "../src/db/connection";
import { migrateToLatest } from "../src/db/migrate";
import { migrationSource } from "../src/db/migrations";
import { createPostgresDatabase } from "./helpers/database";
import { describeIf, onPostgres, TEST_DATABASE_URL } from "./helpers/env";
import { modelInput, sleep, startTestServer, uniqueUser, type TestServer } from "./helpers/harness";
import { havePgbouncer, PGBOUNCER_PATH, startPgbouncer, type Pgbouncer } from "./helpers/pgbouncer";

// CI (.ci/run sets REQUIRE_PGBOUNCER=1) must run these: there a missing pgbouncer is a failure.
const required = process.env.CI === "true" || process.env.REQUIRE_PGBOUNCER === "1";
if (onPostgres && !havePgbouncer) {
  if (required) throw new Error(`no pgbouncer at ${PGBOUNCER_PATH} (install it: apt-get install -y pgbouncer, or set PGBOUNCER_PATH)`);
  process.stderr.write(
    `\n!!! SKIPPING the PgBouncer tests: no pgbouncer at ${PGBOUNCER_PATH} (apt-get install -y pgbouncer, or set PGBOUNCER_PATH). CI runs them. !!!\n\n`,
  );
}

describe("DATABASE_LISTEN_URL", () => {
  test("defaults to DATABASE_URL, can point elsewhere, and a malformed value names the setting", () => {
    const url = "postgres://app@pooler:6432/voice";
    expect(parseConfig({ DATABASE_URL: url }).databaseListenUrl).toBe(url);
    expect(parseConfig({ DATABASE_URL: url, DATABASE_LISTEN_URL: "postgres://app@db:5432/voice" }).databaseListenUrl).toBe("postgres://app@db:5432/voice");
    expect(parseConfig({}).databaseListenUrl).toBeUndefined();
    expect(() => parseConfig({ DATABASE_URL: url, DATABASE_LISTEN_URL: "db:5432" })).toThrow(new ConfigError("DATABASE_LISTEN_URL must be a postgres:// URL"));
    expect(() => parseConfig({ DATABASE_LISTEN_URL: url })).toThrow(/DATABASE_LISTEN_URL needs DATABASE_URL/);
  });
});

const describeBehindPgbouncer = describeIf(onPostgres && havePgbouncer, `needs PostgreSQL and ${PGBOUNCER_PATH}`);

describeBehindPgbouncer("the service behind PgBouncer (transaction pooling)", () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let bouncer: Pgbouncer;
  let direct: pg.Client;
  let applied: string[] = [];
  const servers: TestServer[] = [];

  /** The pooler's transaction count for our database (SHOW STATS). */
  async function pooledTransactions(): Promise<number> {
    const admin = await bouncer.admin();
    try {
      const { rows } = await admin.query("SHOW STATS");
      return Number(rows.find((r) => r.database === database.name)?.total_xact_count ?? 0);
    } finally {
      await admin.end();
    }
  }

  beforeAll(async () => {
    database = await createPostgresDatabase();
    // Four server connections for the two instances' pools of ten: transactions share them.
    bouncer = await startPgbouncer({ upstream: TEST_DATABASE_URL, poolSize: 4 });
    const pooled = bouncer.url(database.name);
    const migrating = await openDatabase({ url: pooled });
    try {
      applied = await migrateToLatest(migrating.knex);
    } finally {
      await migrating.close();
    }
    direct = new pg.Client({ connectionString: database.url });
    await direct.connect();
    const env = {
      DATABASE_URL: pooled,
      DATABASE_LISTEN_URL: database.url,
      DB_POOL_MAX: "10",
      // Rate limits on: each call takes a transaction-scoped advisory lock through the pooler.
      RATE_LIMITS_ENABLED: "true",
      RATE_LIMIT_CREATE: "100000/3600",
      RATE_LIMIT_UPDATE: "100000/3600",
    };
    for (let i = 0; i < 2; i++) servers.push(await startTestServer({ databaseUrl: pooled, env }));
    // Both instances are listening.
    const deadline = Date.now() + 10_000;
    while ((await listeners()).length < 2) {
      if (Date.now() > deadline) throw new Error(`the LISTEN connections did not come up\n${bouncer.output()}`);
      await sleep(50);
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await direct?.end();
    await bouncer?.stop();
    await database?.drop();
  });

  async function listeners() {
    const { rows } = await direct.query(
      `SELECT pid, query FROM pg_stat_activity WHERE application_name = $1 AND datname = $2`,
      [LISTENER_APPLICATION_NAME, database.name],
    );
    return rows as { pid: number; query: string }[];
  }

  test("migrations apply through the pooler", async () => {
    const all = await migrationSource.getMigrations([]);
    expect(applied).toHaveLength(all.length);
    const { rows } = await direct.query("SELECT count(*)::int AS n FROM knex_migrations");
    expect(rows[0].n).toBe(all.length);
  });

  test("LISTEN uses one direct connection per instance (DATABASE_LISTEN_URL), none through the pooler", async () => {
    const direct = await listeners();
    expect(direct).toHaveLength(2);
    for (const l of direct) expect(l.query).toMatch(/^LISTEN /);
    const admin = await bouncer.admin();
    try {
      const { rows } = await admin.query("SHOW CLIENTS");
      const ours = rows.filter((r) => r.database === database.name);
      expect(ours.length).toBeGreaterThan(0);
      expect(ours.filter((r) => r.application_name === LISTENER_APPLICATION_NAME)).toEqual([]);
    } finally {
      await admin.end();
    }
  });

  test("create, activate, list and get active through the pooler", async () => {
    const before = await pooledTransactions();
    const user = await servers[0].actor(uniqueUser("pooled"));
    const first = (await user.grpc.createVoiceModel(modelInput({ qualityScore: 0.5 }))).message.model!;
    const second = (await user.grpc.createVoiceModel(modelInput({ qualityScore: 0.6 }))).message.model!;
    expect(first.isActive).toBe(true);
    await user.grpc.activateVoiceModel({ modelId: second.id });
    expect((await user.grpc.getActiveVoiceModel({})).message.model!.id).toBe(second.id);
    const listed = (await user.grpc.listVoiceModels({ limit: 20 })).message;
    expect(listed.models.map((m) => m.id).sort()).toEqual([first.id, second.id].sort());
    expect(listed.total).toBe(2);
    expect(await pooledTransactions()).toBeGreaterThan(before);
  });

  test("concurrent writes of many users through four server connections keep one active model each", async () => {
    const users = await Promise.all(Array.from({ length: 12 }, (_, i) => servers[i % 2].actor(uniqueUser("busy"))));
    const before = await pooledTransactions();
    await Promise.all(
      users.map(async (user, i) => {
        const created = await Promise.all(
          [0.3, 0.5, 0.7].map((score) => user.grpc.createVoiceModel(modelInput({ qualityScore: score + i / 100 }))),
        );
        const ids = created.map((r) => r.message.model!.id);
        // Activations racing each other on both instances, through the same few server connections.
        await Promise.all(
          ids.concat(ids).map((modelId) =>
            user.grpc.activateVoiceModel({ modelId }).catch((error: { errorInfo?: { reason?: string } }) => {
              if (error.errorInfo?.reason !== "ALREADY_ACTIVE") throw error;
            }),
          ),
        );
      }),
    );
    const { rows } = await direct.query(
      `SELECT user_id, count(*) FILTER (WHERE is_active AND deleted_at IS NULL)::int AS active, count(*)::int AS models
         FROM voice_models WHERE user_id = ANY($1) GROUP BY user_id`,
      [users.map((u) => u.userId)],
    );
    expect(rows).toHaveLength(users.length);
    for (const row of rows) expect(row).toMatchObject({ active: 1, models: 3 });
    // Every call was its own transaction (or more) on the pooler.
    expect((await pooledTransactions()) - before).toBeGreaterThan(users.length * 9);
  });

  test("a write through one instance drops the other's in-process cache (LISTEN on the direct connection)", async () => {
    const userId = uniqueUser("listen");
    const [a, b] = await Promise.all(servers.map((s) => s.actor(userId)));
    const first = (await a.grpc.createVoiceModel(modelInput({ qualityScore: 0.5 }))).message.model!;
    const second = (await a.grpc.createVoiceModel(modelInput({ qualityScore: 0.6 }))).message.model!;
    for (let round = 0; round < 4; round++) {
      const target = round % 2 === 0 ? second : first;
      // B has the current answer cached (served twice: the second from its cache).
      await b.grpc.getActiveVoiceModel({});
      await b.grpc.getActiveVoiceModel({});
      await a.grpc.activateVoiceModel({ modelId: target.id });
      const started = Date.now();
      while ((await b.grpc.getActiveVoiceModel({})).message.model!.id !== target.id) {
        expect(Date.now() - started).toBeLessThan(1_000);
        await sleep(5);
      }
    }
  });
});
