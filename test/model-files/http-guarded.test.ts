import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { httpError } from "../helpers/expect-error";
import { startTestServer, type TestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

// Uploads and imports over plain HTTP go through the same guarded handlers as the RPCs.
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-guard-"));
let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ env: { DATA_DIR: dataDir, RATE_LIMITS_ENABLED: "true", RATE_LIMIT_CREATE: "2/3600", RATE_LIMIT_EXEMPT_ROLES: "admin" } });
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test("POST /v1/voice-models/import counts against the create rate limit (429 with retry-after)", async () => {
  const user = await server.actor();
  const { model } = await grpcStreamingClient(server.grpcPort, user.token).createVoiceModel({ provider: "xtts-v2", modelPath: "m.pth" });
  const put = await fetch(`${server.baseUrl}/v1/voice-models/${model!.id}/file`, { method: "PUT", headers: { authorization: `Bearer ${user.token}` }, body: randomBytes(5000) });
  expect(put.status).toBe(200);
  const exported = Buffer.from(await (await fetch(`${server.baseUrl}/v1/voice-models/${model!.id}/export`, { headers: { authorization: `Bearer ${user.token}` } })).arrayBuffer());
  const first = await fetch(`${server.baseUrl}/v1/voice-models/import`, { method: "POST", headers: { authorization: `Bearer ${user.token}` }, body: exported });
  expect(first.status).toBe(200);
  const second = await fetch(`${server.baseUrl}/v1/voice-models/import`, { method: "POST", headers: { authorization: `Bearer ${user.token}` }, body: exported });
  expect(second.status).toBe(429);
  expect(httpError(await second.json())?.errorInfo?.reason).toBe("RATE_LIMITED");
  expect(Number(second.headers.get("retry-after") ?? "0")).toBeGreaterThanOrEqual(0);
});
