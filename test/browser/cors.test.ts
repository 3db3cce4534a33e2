// The CORS contract a browser relies on, checked on the wire (cross-origin.test.ts drives a real
// browser through it): every request header the clients send passes a preflight, and every reply
// to an allowed origin (RPCs, file routes, errors, refusals) exposes the headers scripts read.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { createModel, useTestServer } from "../helpers/harness";

const ORIGIN = "https://app.example.com";
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-cors-"));
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));
const server = useTestServer({ env: { DATA_DIR: dataDir, CORS_ORIGINS: ORIGIN } });

// What connect-web (Connect and gRPC-Web), the file routes and our own clients send.
const REQUEST_HEADERS = [
  "authorization",
  "content-type",
  "x-request-id",
  "connect-protocol-version",
  "connect-timeout-ms",
  "connect-content-encoding",
  "connect-accept-encoding",
  "content-encoding",
  "accept-encoding",
  "x-grpc-web",
  "x-user-agent",
  "grpc-timeout",
  "grpc-encoding",
  "grpc-accept-encoding",
  "range",
  "if-range",
  "if-match",
  "if-none-match",
  "x-content-sha256",
];
// What scripts read: request id, status of both protocols, rate-limit wait, resumable downloads.
const RESPONSE_HEADERS = [
  "x-request-id",
  "retry-after",
  "grpc-status",
  "grpc-message",
  "grpc-status-details-bin",
  "etag",
  "content-range",
  "accept-ranges",
  "content-disposition",
  "content-length",
];

const list = (value: string | null) => (value ?? "").split(",").map((h) => h.trim().toLowerCase());

function expectCorsReply(headers: Headers) {
  expect(headers.get("access-control-allow-origin")).toBe(ORIGIN);
  expect(list(headers.get("access-control-expose-headers"))).toEqual(expect.arrayContaining(RESPONSE_HEADERS));
  expect(list(headers.get("vary"))).toContain("origin");
}

describe("preflight", () => {
  test.each([
    ["POST", `/${VoiceModelService.typeName}/GetVoiceModel`],
    ["PUT", "/v1/voice-models/some-id/file"],
    ["GET", "/v1/voice-models/some-id/file"],
    ["DELETE", "/voice-models/some-id"],
    ["PUT", "/voice-models/some-id"],
  ])("%s %s: every header a client sends is allowed", async (method, url) => {
    const response = await server().fetch(url, {
      method: "OPTIONS",
      headers: { origin: ORIGIN, "access-control-request-method": method, "access-control-request-headers": REQUEST_HEADERS.join(",") },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    expect(list(response.headers.get("access-control-allow-headers"))).toEqual(expect.arrayContaining(REQUEST_HEADERS));
    expect(list(response.headers.get("access-control-allow-methods"))).toContain(method.toLowerCase());
  });

  test("an origin not listed gets no CORS headers, only Vary: Origin", async () => {
    const response = await server().fetch("/v1/voice-models/some-id/file", {
      method: "OPTIONS",
      headers: { origin: "https://evil.example.net", "access-control-request-method": "PUT", "access-control-request-headers": "x-content-sha256" },
    });
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    expect(response.headers.get("access-control-allow-headers")).toBeNull();
    expect(list(response.headers.get("vary"))).toContain("origin");
  });
});

describe("replies to an allowed origin expose what scripts read", () => {
  test("a ranged file download", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const upload = await fetch(`${server().baseUrl}/v1/voice-models/${model.id}/file`, {
      method: "PUT",
      headers: { origin: ORIGIN, authorization: `Bearer ${alice.token}` },
      body: new Uint8Array(1000).fill(3),
    });
    expect(upload.status).toBe(200);
    expectCorsReply(upload.headers);
    const download = await server().fetch(`/v1/voice-models/${model.id}/file`, { token: alice.token, headers: { origin: ORIGIN, range: "bytes=10-19" } });
    expect(download.status).toBe(206);
    expectCorsReply(download.headers);
  });

  test.each([
    ["a file route refusing a missing token", "/v1/voice-models/some-id/file", undefined, 401],
    ["a file route's not-found", "/v1/voice-models/00000000-0000-4000-8000-000000000000/file", "token", 404],
    ["an unknown path", "/no/such/route", "token", 404],
  ])("%s", async (_, url, withToken, status) => {
    const alice = await server().actor();
    const response = await server().fetch(url, { token: withToken && alice.token, headers: { origin: ORIGIN } });
    expect(response.status).toBe(status);
    expectCorsReply(response.headers);
  });

  test("a Connect JSON error", async () => {
    const alice = await server().actor();
    const response = await server().rpcJson("GetVoiceModel", { modelId: "00000000-0000-4000-8000-000000000000" }, alice.token, { origin: ORIGIN });
    expect(response.status).toBe(404);
    expectCorsReply(response.headers);
  });

  test("a Connect JSON body refused before any handler runs", async () => {
    const alice = await server().actor();
    const response = await server().rpcJson("GetVoiceModel", "{not json", alice.token, { origin: ORIGIN });
    expect(response.status).toBe(400);
    expectCorsReply(response.headers);
  });
});
