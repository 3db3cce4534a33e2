// The GCS endpoint goes away (a server that accepts and never answers, then one that refuses):
// file calls fail within the storage timeouts as UNAVAILABLE / STORAGE_UNAVAILABLE with
// retry-after, /readyz stays green (the database is fine) while its body, the gRPC health entry
// of the blob store and a metric say the store is down; all of it recovers by itself. A reader
// slower than the timeouts, but never stalled, still gets the whole file (no cap on total time).
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { service as healthService } from "grpc-health-check";
import { randomBytes } from "node:crypto";
import { BLOB_STORE_HEALTH_SERVICE } from "../../src/app";
import { startGcsEmulator, type GcsEmulator } from "../helpers/gcs-emulator";
import { httpError } from "../helpers/expect-error";
import { createModel, startTestServer, type Actor, type TestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";
import { TcpProxy } from "../helpers/tcp-proxy";

const TIMEOUT_MS = 750;
// Both timeouts, a stat before the read, and slack for a busy machine.
const BOUND_MS = 4 * TIMEOUT_MS + 1_500;

let emulator: GcsEmulator;
let proxy: TcpProxy;
let server: TestServer;
let user: Actor;
let health: grpc.Client & Record<string, Function>;
let modelId: string;
const body = randomBytes(3 * 1024 * 1024);

beforeAll(async () => {
  emulator = await startGcsEmulator();
  const endpoint = new URL(emulator.endpoint);
  proxy = new TcpProxy(endpoint.hostname, Number(endpoint.port));
  await proxy.open();
  server = await startTestServer({
    env: {
      BLOB_STORE: "gcs",
      GCS_BUCKET: "voice-models-outage",
      GCS_API_ENDPOINT: `http://127.0.0.1:${proxy.port}`,
      GCS_PROJECT_ID: emulator.projectId,
      MASTER_KEY: randomBytes(32).toString("base64"),
      STORAGE_CONNECT_TIMEOUT_MS: String(TIMEOUT_MS),
      STORAGE_IDLE_TIMEOUT_MS: String(TIMEOUT_MS),
      STORAGE_PROBE_INTERVAL_MS: "100",
    },
  });
  user = await server.actor();
  const Health = grpc.makeGenericClientConstructor(healthService, "Health");
  health = new Health(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure()) as never;
  modelId = (await createModel(user)).id;
  const put = await fetch(`${server.baseUrl}/v1/voice-models/${modelId}/file`, {
    method: "PUT",
    headers: { authorization: `Bearer ${user.token}` },
    body,
  });
  expect(put.status).toBe(200);
}, 60_000);

afterAll(async () => {
  health?.close();
  await server?.close();
  await proxy?.close();
  // The SDK may still hold a retry timer of a call the guard already answered (it gives up within
  // the connect + idle window): let it run out before Jest tears the module registry down.
  await new Promise((resolve) => setTimeout(resolve, 3 * TIMEOUT_MS + 1_500));
  await emulator?.stop();
});

const healthOf = (service: string) =>
  new Promise<string>((resolve, reject) =>
    health.check({ service }, (error: grpc.ServiceError | null, reply: { status: string }) => (error ? reject(error) : resolve(reply.status))),
  );

async function blobStoreUp(): Promise<number | undefined> {
  const metrics = await fetch(`${server.baseUrl}/metrics`).then((r) => r.text());
  const line = /^voice_model_blob_store_up (\d)$/m.exec(metrics);
  return line ? Number(line[1]) : undefined;
}

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readOverGrpc(pauseMs = 0): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of grpcStreamingClient(server.grpcPort, user.token).readModelFile({ modelId })) {
    parts.push(Buffer.from(m.chunk));
    if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
  }
  return Buffer.concat(parts);
}

/** The store is down: each file call fails fast and says so; the database side is untouched. */
async function expectStorageOutage() {
  let started = Date.now();
  const download = await fetch(`${server.baseUrl}/v1/voice-models/${modelId}/file`, { headers: { authorization: `Bearer ${user.token}` } });
  expect(Date.now() - started).toBeLessThan(BOUND_MS);
  expect(download.status).toBe(503);
  expect(download.headers.get("retry-after")).toBe("5");
  const reply = httpError(await download.json());
  expect(reply?.errorInfo?.reason).toBe("STORAGE_UNAVAILABLE");
  expect(reply?.message).toMatch(/blob store/);
  expect(reply?.message).not.toMatch(/database/);

  started = Date.now();
  const error = await readOverGrpc().then(() => undefined, (e: unknown) => e);
  expect(Date.now() - started).toBeLessThan(BOUND_MS);
  expect(error).toBeInstanceOf(ConnectError);
  expect((error as ConnectError).code).toBe(Code.Unavailable);
  expect((error as ConnectError).rawMessage).toMatch(/blob store/);

  started = Date.now();
  const upload = await fetch(`${server.baseUrl}/v1/voice-models/${modelId}/file`, {
    method: "PUT",
    headers: { authorization: `Bearer ${user.token}` },
    body: randomBytes(512 * 1024),
  });
  expect(Date.now() - started).toBeLessThan(BOUND_MS);
  expect(upload.status).toBe(503);
  expect(httpError(await upload.json())?.errorInfo?.reason).toBe("STORAGE_UNAVAILABLE");

  await until(async () => (await server.fetch("/readyz")).body?.blobStore?.status === "down", "/readyz to show the store down");
  const ready = await server.fetch("/readyz");
  expect(ready.status).toBe(200); // readiness is the database's: the fleet is not drained
  expect(await healthOf(BLOB_STORE_HEALTH_SERVICE)).toBe("NOT_SERVING");
  expect(await healthOf("")).toBe("SERVING");
  expect(await blobStoreUp()).toBe(0);
  // Calls that do not touch the store are served as usual.
  expect((await server.call("grpc", "getVoiceModel", { modelId }, user.token)).code).toBe(0);
}

async function expectRecovered() {
  await until(async () => (await server.fetch("/readyz")).body?.blobStore?.status === "up", "/readyz to show the store up");
  expect(await healthOf(BLOB_STORE_HEALTH_SERVICE)).toBe("SERVING");
  expect(await blobStoreUp()).toBe(1);
  expect((await readOverGrpc()).equals(body)).toBe(true);
}

test("the store is up: the probe says so everywhere", async () => {
  await expectRecovered();
});

test("an endpoint that accepts and never answers: STORAGE_UNAVAILABLE within the timeouts, then recovery", async () => {
  proxy.blackhole();
  await expectStorageOutage();
  proxy.forward();
  await expectRecovered();
}, 30_000);

test("an endpoint that refuses connections: STORAGE_UNAVAILABLE, then recovery", async () => {
  await proxy.close();
  await expectStorageOutage();
  await proxy.open();
  await expectRecovered();
}, 30_000);

test("a reader slower than the timeouts but never stalled gets the whole file", async () => {
  const started = Date.now();
  // ~48 messages of 64 KiB, 90 ms apart: several times the idle and connect timeouts in total.
  expect((await readOverGrpc(90)).equals(body)).toBe(true);
  expect(Date.now() - started).toBeGreaterThan(4 * TIMEOUT_MS);
}, 30_000);
