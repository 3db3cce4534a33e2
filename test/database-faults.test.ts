// Each way a PostgreSQL server can refuse or drop the service answers UNAVAILABLE
// (SERVICE_UNAVAILABLE, retry-after), never INTERNAL: shutting down (57P03), admin shutdown
// (57P01, from a fast stop and from pg_terminate_backend), too many connections (53300) and a pool
// with no free connection (the acquire timeout, "overloaded"). The errors are the server's own,
// from a cluster this file creates and stops (the shared server is never touched).
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { openDatabase, type Database } from "../src/db/connection";
import { databaseUnavailable } from "../src/db/db-errors";
import { migrateToLatest } from "../src/db/migrate";
import { VoiceModelRow } from "../src/db/models/voice-model-row";
import { describeOnPostgres } from "./helpers/env";
import { startTestServer, TRANSPORTS, type RpcOutcome, type TestServer } from "./helpers/harness";
import { ThrowawayCluster } from "./helpers/throwaway-cluster";
import { userToken } from "./helpers/tokens";

const SERVER_ENV = { IN_PROCESS_CACHE_ENTRIES: "0" }; // every read reaches the database

/** Calls from a few concurrent clients on both transports until stop() says when. */
function load(server: TestServer, token: string, workers = 6) {
  const outcomes: RpcOutcome[] = [];
  let running = true;
  const loops = Array.from({ length: workers }, async (_, i) => {
    while (running) {
      const transport = TRANSPORTS[i % TRANSPORTS.length];
      outcomes.push(await server.call(transport, i % 3 === 2 ? "getActiveVoiceModel" : "listVoiceModels", {}, token));
    }
  });
  return {
    outcomes,
    failures: () => outcomes.filter((o) => o.code !== 0),
    async stop() {
      running = false;
      await Promise.all(loops);
      return outcomes;
    },
  };
}

/** Every outcome is a success or SERVICE_UNAVAILABLE: none is INTERNAL or anything else. */
function expectOnlyUnavailable(outcomes: RpcOutcome[]) {
  const other = outcomes.filter((o) => o.code !== 0 && !(o.code === Code.Unavailable && o.errorInfo?.reason === "SERVICE_UNAVAILABLE"));
  expect(other.map((o) => `${Code[o.code]} ${o.errorInfo?.reason} ${o.errorMessage}`)).toEqual([]);
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A session of the test's own; a server stop ends it, which is expected, not an error. */
function session(url: string) {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  return client;
}

/** The error a fresh connection attempt gets (undefined when it connects). */
async function connectError(url: string): Promise<(Error & { code?: string }) | undefined> {
  const client = session(url);
  try {
    await client.connect();
    return undefined;
  } catch (error) {
    return error as Error & { code?: string };
  } finally {
    await client.end().catch(() => {});
  }
}

describeOnPostgres("database faults on a cluster of the test's own", () => {
  let cluster: ThrowawayCluster;
  let token: string;

  beforeAll(async () => {
    cluster = await ThrowawayCluster.create();
    const db = await openDatabase({ url: cluster.url() });
    await migrateToLatest(db.knex);
    // A role that may hold two connections and owns its own database (53300 below).
    await db.knex.raw("create role limited login connection limit 2");
    await db.knex.raw("create database limited_db owner limited");
    await db.close();
    const limited = await openDatabase({ url: cluster.url("limited_db", "limited") });
    await migrateToLatest(limited.knex);
    await limited.close();
    token = await userToken("faults-user");
  }, 60_000);

  afterAll(async () => {
    await cluster?.destroy();
  });

  test("shutting down (57P03), then a fast stop under load (57P01, refused): UNAVAILABLE, and recovery", async () => {
    const db = await openDatabase({ url: cluster.url(), poolMax: 4 });
    const server = await startTestServer({ database: db, env: SERVER_ENV });
    const held = session(cluster.url());
    let traffic: ReturnType<typeof load> | undefined;
    try {
      expect((await server.call("grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "a.pth" }, token)).code).toBe(0);
      const live = (traffic = load(server, token));
      await until(async () => live.outcomes.length > 20, "load to start");

      // A smart stop with a session still open: the server refuses every new connection with
      // 57P03 until that session ends. The server's own sessions are ended so its pool reconnects.
      await held.connect();
      await cluster.stop("smart", false);
      await until(async () => (await connectError(cluster.url()))?.code === "57P03", "57P03 on connect");
      await held.query("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and backend_type = 'client backend'");
      await until(async () => live.failures().some((o) => /starting up or shutting down/.test(o.errorMessage ?? "")), "a call answered 57P03");
      const during = await server.rpcJson("ListVoiceModels", {}, token);
      expect(during.status).toBe(503);
      expect(during.headers.get("retry-after")).toBe("2");
      expect((await server.fetch("/readyz")).status).toBe(503);

      // Fast mode ends the held session and the rest with 57P01, then refuses connections.
      const before = live.outcomes.length;
      await cluster.stop("fast");
      await until(async () => live.outcomes.length > before + 30, "calls while stopped");
      expect(live.failures().some((o) => /unreachable/.test(o.errorMessage ?? ""))).toBe(true);

      await cluster.start();
      await until(async () => (await server.call("grpc", "getActiveVoiceModel", {}, token)).code === 0, "recovery");
      const outcomes = await live.stop();
      expectOnlyUnavailable(outcomes);
      expect((await server.fetch("/readyz")).status).toBe(200);
    } finally {
      await traffic?.stop();
      await held.end().catch(() => {});
      await cluster.start().catch(() => {}); // already running unless a step above failed
      await server.close();
      await db.close();
    }
  }, 60_000);

  test("the errors of a stopping server, read through Objection, are each classified", async () => {
    // Objection wraps the driver's error (nativeError holds the SQLSTATE); each class is found there.
    const held = session(cluster.url());
    await held.connect();
    const db = await openDatabase({ url: cluster.url(), poolMax: 2 });
    try {
      await VoiceModelRow.query(db.knex).limit(1); // one pooled session, open before the stop
      await cluster.stop("smart", false);
      await until(async () => (await connectError(cluster.url()))?.code === "57P03", "57P03 on connect");
      await held.query("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and backend_type = 'client backend'");
      // The first query may still meet the terminated session (its end not yet seen by the pool):
      // that error is classified too; a new connection then gets 57P03.
      const classified: (string | undefined)[] = [];
      for (let attempt = 0; attempt < 5 && !classified.some((m) => /shutting down/.test(m ?? "")); attempt++) {
        const error = await VoiceModelRow.query(db.knex).limit(1).then(() => undefined, (e: unknown) => e);
        expect(error).toBeDefined();
        const unavailable = databaseUnavailable(error);
        expect(unavailable?.code).toBe("SERVICE_UNAVAILABLE");
        classified.push(unavailable?.message);
      }
      expect(classified.some((m) => /shutting down/.test(m ?? ""))).toBe(true);
    } finally {
      await held.end().catch(() => {});
      await cluster.stop("fast").catch(() => {});
      await cluster.start();
      await db.close();
    }
  }, 30_000);

  test("pg_terminate_backend on the service's own sessions under load (57P01): UNAVAILABLE", async () => {
    const db = await openDatabase({ url: cluster.url(), poolMax: 4 });
    const server = await startTestServer({ database: db, env: SERVER_ENV });
    const admin = session(cluster.url());
    await admin.connect();
    const traffic = load(server, token, 8);
    try {
      await until(async () => traffic.outcomes.length > 20, "load to start");
      const started = Date.now();
      while (traffic.failures().length === 0 && Date.now() - started < 10_000) {
        await admin.query("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and backend_type = 'client backend'");
        await new Promise((r) => setTimeout(r, 20));
      }
      const outcomes = await traffic.stop();
      expect(traffic.failures().length).toBeGreaterThan(0);
      expect(traffic.failures()[0].errorMessage).toMatch(/unreachable/);
      expectOnlyUnavailable(outcomes);
      expect((await server.call("connect", "listVoiceModels", {}, token)).code).toBe(0); // the pool recovered
    } finally {
      await traffic.stop();
      await admin.end();
      await server.close();
      await db.close();
    }
  }, 30_000);

  test("too many connections for the role (53300): UNAVAILABLE with retry-after", async () => {
    const url = cluster.url("limited_db", "limited");
    // Both of the role's connections taken by someone else: the service's pool cannot open one.
    const others = [session(url), session(url)];
    for (const client of others) await client.connect();
    expect((await connectError(url))?.code).toBe("53300");
    const db = await openDatabase({ url, poolMax: 2 });
    const server = await startTestServer({ database: db, env: SERVER_ENV });
    try {
      for (const transport of TRANSPORTS) {
        const outcome = await server.call(transport, "listVoiceModels", {}, token);
        expect({ code: Code[outcome.code], reason: outcome.errorInfo?.reason }).toEqual({ code: "Unavailable", reason: "SERVICE_UNAVAILABLE" });
        expect(outcome.errorMessage).toMatch(/too many connections/);
      }
      const json = await server.rpcJson("ListVoiceModels", {}, token);
      expect(json.status).toBe(503);
      expect(json.headers.get("retry-after")).toBe("2");
      await others[0].end();
      await until(async () => (await server.call("grpc", "listVoiceModels", {}, token)).code === 0, "a free slot to be used");
    } finally {
      for (const client of others) await client.end().catch(() => {});
      await server.close();
      await db.close();
    }
  }, 30_000);

  test("every pooled connection busy past the acquire timeout: UNAVAILABLE, 'overloaded'", async () => {
    const db: Database = await openDatabase({ url: cluster.url(), poolMax: 1, acquireTimeoutMs: 300 });
    const server = await startTestServer({ database: db, env: SERVER_ENV });
    const locker = session(cluster.url());
    await locker.connect();
    const token = await userToken("pool-user"); // nothing of theirs is in the cache tables yet
    try {
      // The one pooled connection waits on a lock this session holds.
      await locker.query("begin");
      await locker.query("lock table voice_models in access exclusive mode");
      // A few callers, so one of them holds the connection whatever else the pool serves.
      const blocked = Promise.all([0, 1, 2].map(() => server.call("grpc", "listVoiceModels", {}, token)));
      await until(
        async () => (await locker.query("select count(*)::int as n from pg_locks where not granted")).rows[0].n > 0,
        "the service's query to wait on the lock",
      );
      const started = Date.now();
      const json = await server.rpcJson("ListVoiceModels", {}, token);
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(json.status).toBe(503);
      expect(json.body.message).toMatch(/overloaded/);
      expect(json.body.message).not.toMatch(/unreachable/);
      expect(json.headers.get("retry-after")).toBe("2");
      const grpcOutcome = await server.call("grpc", "getActiveVoiceModel", {}, token);
      expect(grpcOutcome.code).toBe(Code.Unavailable);
      expect(grpcOutcome.errorMessage).toMatch(/overloaded/);
      await locker.query("rollback");
      expectOnlyUnavailable(await blocked); // the callers that waited end too, one way or the other
    } finally {
      await locker.end();
      await server.close();
      await db.close();
    }
  }, 30_000);
});
