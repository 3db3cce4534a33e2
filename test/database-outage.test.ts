// The database goes away: calls fail fast with UNAVAILABLE (503 on Connect JSON), /readyz says so,
// and the service recovers by itself when the database comes back.
import { Code } from "@connectrpc/connect";
import { openDatabase } from "../src/db/connection";
import { migrateToLatest } from "../src/db/migrate";
import { createPostgresDatabase } from "./helpers/database";
import { describeOnPostgres, TEST_DATABASE_URL } from "./helpers/env";
import { expectRpcError } from "./helpers/expect-error";
import { startTestServer, TRANSPORTS, type TestServer } from "./helpers/harness";
import { TcpProxy } from "./helpers/tcp-proxy";
import { userToken } from "./helpers/tokens";

describeOnPostgres("database outage", () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let proxy: TcpProxy;
  let server: TestServer;
  let token: string;

  beforeAll(async () => {
    database = await createPostgresDatabase();
    const direct = await openDatabase({ url: database.url });
    await migrateToLatest(direct.knex);
    await direct.close();
    const target = new URL(TEST_DATABASE_URL);
    proxy = new TcpProxy(target.hostname, Number(target.port || 5432));
    await proxy.open();
    const viaProxy = new URL(database.url);
    viaProxy.host = `127.0.0.1:${proxy.port}`;
    server = await startTestServer({ databaseUrl: viaProxy.toString() });
    token = await userToken("outage-user");
  });

  afterAll(async () => {
    await proxy?.open().catch(() => {}); // let the server's pool close cleanly
    await server?.close();
    await proxy?.close();
    await database?.drop();
  });

  test("UNAVAILABLE while the database is down, and recovery once it is back", async () => {
    const created = await server.call("grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "before.pth" }, token);
    expect(created.code).toBe(0);
    expect((await server.fetch("/readyz")).status).toBe(200);

    await proxy.close();

    const unavailable = { code: Code.Unavailable, reason: "SERVICE_UNAVAILABLE" };
    for (const transport of TRANSPORTS) {
      const started = Date.now();
      expectRpcError(await server.call(transport, "getActiveVoiceModel", {}, token), unavailable);
      expectRpcError(await server.call(transport, "createVoiceModel", { provider: "xtts-v2", modelPath: "during.pth" }, token), unavailable);
      // Fails fast rather than hanging for the pool's acquire timeout.
      expect(Date.now() - started).toBeLessThan(10_000);
    }
    const http = await server.rpcJson("ListVoiceModels", {}, token);
    expect(http.status).toBe(503);
    expect(http.body.code).toBe("unavailable");
    expect(http.headers.get("x-request-id")).toBeTruthy();
    const ready = await server.fetch("/readyz");
    expect(ready.status).toBe(503);
    expect((await server.fetch("/healthz")).status).toBe(200); // the process itself is fine

    await proxy.open();

    // Recovers by itself: no restart, the pool reconnects.
    const deadline = Date.now() + 15_000;
    let outcome = await server.call("grpc", "getActiveVoiceModel", {}, token);
    while (outcome.code !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      outcome = await server.call("grpc", "getActiveVoiceModel", {}, token);
    }
    expect(outcome.code).toBe(0);
    expect(outcome.message.model.id).toBe(created.message.model.id); // the data is intact
    expect((await server.fetch("/readyz")).status).toBe(200);
    const list = await server.call("connect", "listVoiceModels", {}, token);
    expect(list.message.total).toBe(1); // nothing was written while down
  });
});
