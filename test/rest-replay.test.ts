import { randomBytes } from "node:crypto";
import { createModel, startTestServer, useTestServer, type Actor } from "./helpers/harness";

// Replays the shape of the design document's example request for every REST path, with ids from
// this file's own fixtures, and checks the status and the documented response fields; then the
// refusals every path shares (401, 403, 429, bad JSON) and the two paths that are not plain unary
// calls (export, backup).
const server = useTestServer({ env: { RATE_LIMIT_BACKUP: "1000/3600" } });

const get = (path: string, token?: string) => server().fetch(path, { token });
const send = (method: string, path: string, token: string, body: unknown = {}) => server().fetch(path, { method, token, body });

const flatError = (body: any) => {
  expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId", "timestamp"]);
  return body;
};

const MODEL_FIELDS = ["id", "userId", "provider", "modelPath", "sampleRate", "qualityScore", "isActive", "status", "createdAt", "updatedAt"];
const expectModel = (json: any) => {
  for (const key of MODEL_FIELDS) expect(json).toHaveProperty(key);
  return json;
};

describe("every path of the design document", () => {
  let owner: Actor;
  let sharee: Actor;
  let first: any;
  let second: any;
  beforeAll(async () => {
    owner = await server().actor();
    sharee = await server().actor();
    first = (await send("POST", "/voice-models", owner.token, { provider: "xtts-v2", modelPath: "owner/voice-1.pth", qualityScore: 0.85, sampleRate: 22050, metadata: { language: "en" } })).body;
    second = (await send("POST", "/voice-models", owner.token, { provider: "openai-tts", modelPath: "owner/voice-2", qualityComponents: { similarity: 0.9, naturalness: 0.8, clarity: 0.7, consistency: 0.9 } })).body;
  });

  test("POST /voice-models -> CreateVoiceModel (the model)", async () => {
    const r = await send("POST", "/voice-models", owner.token, { userId: owner.userId, provider: "google-cloud-tts", modelPath: "owner/voice-3", qualityScore: 0.5, status: "training" });
    expect(r.status).toBe(200);
    expect(expectModel(r.body)).toMatchObject({ userId: owner.userId, provider: "google-cloud-tts", status: "training", isActive: false });
    expect(first).toMatchObject({ qualityScore: 0.85, isActive: true });
  });

  test("GET /voice-models/user/{userId}?limit&offset&provider -> ListVoiceModels", async () => {
    const r = await get(`/voice-models/user/${owner.userId}?limit=1&offset=0&provider=xtts-v2`, owner.token);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ total: 1, models: [expect.objectContaining({ id: first.id })] });
    expect(r.body).toHaveProperty("nextPageToken");
  });

  test("GET /voice-models/{modelId} -> GetVoiceModel (the model)", async () => {
    const r = await get(`/voice-models/${first.id}`, owner.token);
    expect(r.status).toBe(200);
    expect(expectModel(r.body).id).toBe(first.id);
  });

  test("PUT /voice-models/{modelId} -> UpdateVoiceModel (the model)", async () => {
    const r = await send("PUT", `/voice-models/${second.id}`, owner.token, { qualityScore: 0.75, metadata: { note: "retuned" } });
    expect(r.status).toBe(200);
    expect(expectModel(r.body)).toMatchObject({ id: second.id, qualityScore: 0.75, metadata: { note: "retuned" } });
  });

  test("POST /voice-models/{modelId}/activate and /deactivate -> Activate/DeactivateVoiceModel (the model)", async () => {
    // The second model (score 0.830, above 0.800) took over at creation.
    const on = await send("POST", `/voice-models/${first.id}/activate`, owner.token);
    expect(on.status).toBe(200);
    expect(expectModel(on.body)).toMatchObject({ id: first.id, isActive: true });
    const off = await send("POST", `/voice-models/${first.id}/deactivate`, owner.token);
    expect(off.status).toBe(200);
    expect(off.body).toMatchObject({ id: first.id, isActive: false });
    expect((await send("POST", `/voice-models/${first.id}/activate`, owner.token)).status).toBe(200);
    const again = await send("POST", `/voice-models/${first.id}/activate`, owner.token);
    expect(again.status).toBe(409);
    expect(flatError(again.body).code).toBe("ALREADY_ACTIVE");
  });

  test("GET /voice-models/user/{userId}/active -> GetActiveVoiceModel", async () => {
    const r = await get(`/voice-models/user/${owner.userId}/active`, owner.token);
    expect(r.status).toBe(200);
    expect(expectModel(r.body.model).id).toBe(first.id);
  });

  test("POST /voice-models/compare -> CompareVoiceModels", async () => {
    const r = await send("POST", "/voice-models/compare", owner.token, { userId: owner.userId, modelIds: [first.id, second.id] });
    expect(r.status).toBe(200);
    expect(r.body.models).toHaveLength(2);
    expect(r.body.models[0]).toMatchObject({ rank: 1, model: expect.objectContaining({ id: first.id }), usage: expect.objectContaining({ usageCount: 0 }) });
    expect(r.body.recommendation).toMatchObject({ modelId: first.id });
  });

  test("POST /voice-models/select-best -> SelectBestVoiceModel", async () => {
    const r = await send("POST", "/voice-models/select-best", owner.token, { userId: owner.userId, criteria: { minQualityScore: 0.6, preferredProvider: "xtts-v2" } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ model: expect.objectContaining({ id: first.id }), activated: false });
    expect(typeof r.body.reason).toBe("string");
    expect(Array.isArray(r.body.others)).toBe(true);
  });

  test("GET /voice-models/user/{userId}/analytics -> GetVoiceModelAnalytics", async () => {
    const r = await get(`/voice-models/user/${owner.userId}/analytics`, owner.token);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ totalModels: 3, activeModels: 1, totalUsageCount: 0 });
    for (const key of ["modelsByProvider", "averageQualityScore", "totalCost", "storageUsedMb"]) expect(r.body).toHaveProperty(key);
  });

  test("GET /voice-models/{modelId}/usage-stats -> GetVoiceModelUsageStats (with a range)", async () => {
    const service = await server().serviceActor();
    await service.grpc.recordUsage({ modelId: first.id, userId: owner.userId, characters: 120n, latencyMs: 40, cost: 0.25, idempotencyKey: "replay-1" });
    const r = await get(`/voice-models/${first.id}/usage-stats?startTime=2020-01-01T00:00:00Z`, owner.token);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ modelId: first.id, usageCount: 1, totalCost: 0.25 });
    expect(r.body).toHaveProperty("averageLatency");
  });

  test("POST /voice-models/{modelId}/share and GET /voice-models/user/{userId}/shared", async () => {
    const shared = await send("POST", `/voice-models/${first.id}/share`, owner.token, { targetUserIds: [sharee.userId], permissions: "view" });
    expect(shared.status).toBe(200);
    expect(shared.body.shares[0]).toMatchObject({ modelId: first.id, ownerId: owner.userId, targetUserId: sharee.userId, permission: "view" });
    const list = await get(`/voice-models/user/${sharee.userId}/shared?limit=10`, sharee.token);
    expect(list.status).toBe(200);
    expect(list.body.sharedModels).toEqual([expect.objectContaining({ sharedBy: owner.userId, permission: "view", model: expect.objectContaining({ id: first.id }) })]);
  });

  test("GET /voice-models/expiring?withinDays -> ListExpiringModels; POST /voice-models/cleanup -> CleanupExpiredModels (admin)", async () => {
    const expiring = await get(`/voice-models/expiring?withinDays=30&userId=${owner.userId}`, owner.token);
    expect(expiring.status).toBe(200);
    expect(expiring.body).toEqual({ models: [] });
    const admin = await server().adminActor();
    const cleanup = await send("POST", "/voice-models/cleanup", admin.token, { dryRun: true });
    expect(cleanup.status).toBe(200);
    expect(cleanup.body).toMatchObject({ cleanedCount: 0, models: expect.any(Array) });
    expect(cleanup.body).toHaveProperty("eligibleCount");
    expect((await send("POST", "/voice-models/cleanup", owner.token, { dryRun: true })).status).toBe(403);
  });

  test("GET /voice-models/{modelId}/export serves the same bytes as GET /v1/voice-models/{modelId}/export", async () => {
    const file = randomBytes(70_000);
    const put = await fetch(`${server().baseUrl}/v1/voice-models/${second.id}/file`, { method: "PUT", headers: { authorization: `Bearer ${owner.token}` }, body: file });
    expect(put.status).toBe(200);
    const auth = { headers: { authorization: `Bearer ${owner.token}` } };
    const rest = await fetch(`${server().baseUrl}/voice-models/${second.id}/export`, auth);
    const v1 = await fetch(`${server().baseUrl}/v1/voice-models/${second.id}/export`, auth);
    expect(rest.status).toBe(200);
    expect(rest.headers.get("content-type")).toBe(v1.headers.get("content-type"));
    const [restBytes, v1Bytes] = [Buffer.from(await rest.arrayBuffer()), Buffer.from(await v1.arrayBuffer())];
    expect(restBytes.length).toBeGreaterThan(file.length / 2);
    expect(restBytes.equals(v1Bytes)).toBe(true);
    // The same download: ranges and HEAD as on /v1.
    const ranged = await fetch(`${server().baseUrl}/voice-models/${second.id}/export`, { headers: { ...auth.headers, range: "bytes=0-15" } });
    expect(ranged.status).toBe(206);
    expect(Buffer.from(await ranged.arrayBuffer()).equals(v1Bytes.subarray(0, 16))).toBe(true);
    const head = await fetch(`${server().baseUrl}/voice-models/${second.id}/export`, { ...auth, method: "HEAD" });
    expect(head.headers.get("etag")).toBe(v1.headers.get("etag"));
    // Its errors are the REST shape: a model without a file.
    const none = await get(`/voice-models/${first.id}/export`, owner.token);
    expect(none.status).toBe(400);
    expect(flatError(none.body).code).toBe("MODEL_FILE_MISSING");
  });

  test("POST /voice-models/user/{userId}/backup answers the final CreateBackupResponse; /restore restores it", async () => {
    const backup = await send("POST", `/voice-models/user/${owner.userId}/backup`, owner.token, { includeDeleted: false });
    expect(backup.status).toBe(200);
    expect(backup.body.backup).toMatchObject({ userId: owner.userId, modelCount: 3, includeDeleted: false });
    for (const key of ["backupId", "backupPath", "sizeBytes", "sha256", "createdAt"]) expect(backup.body.backup).toHaveProperty(key);
    const restore = await send("POST", `/voice-models/user/${owner.userId}/restore`, owner.token, { backupPath: backup.body.backup.backupPath, overwriteExisting: false });
    expect(restore.status).toBe(200);
    expect(restore.body).toMatchObject({ restored: 0, skipped: 3, overwritten: 0 });
  });

  test("DELETE /voice-models/{modelId} -> DeleteVoiceModel (the model and the active one after)", async () => {
    const r = await send("DELETE", `/voice-models/${first.id}`, owner.token, undefined);
    expect(r.status).toBe(200);
    expect(expectModel(r.body.model)).toMatchObject({ id: first.id, isActive: false });
    expect(r.body.model.deletedAt).toBeDefined();
    expect(r.body).toHaveProperty("activeModelId");
  });
});

describe("refusals", () => {
  test("a user naming another user's id is 403 on every user path; service and admin callers may", async () => {
    const me = await server().actor();
    const other = await server().actor();
    const model = await createModel(other);
    const paths: Array<[string, string, unknown?]> = [
      ["GET", `/voice-models/user/${other.userId}`],
      ["GET", `/voice-models/user/${other.userId}/active`],
      ["GET", `/voice-models/user/${other.userId}/analytics`],
      ["GET", `/voice-models/user/${other.userId}/shared`],
      ["GET", `/voice-models/expiring?userId=${other.userId}`],
      ["POST", `/voice-models/user/${other.userId}/backup`, {}],
      ["POST", `/voice-models/user/${other.userId}/restore`, { backupPath: `backups/${other.userId}/x` }],
      ["POST", "/voice-models/select-best", { userId: other.userId }],
      ["POST", "/voice-models", { userId: other.userId, provider: "xtts-v2", modelPath: "x" }],
      ["GET", `/voice-models/${model.id}`],
      ["POST", `/voice-models/${model.id}/activate`, {}],
    ];
    for (const [method, path, body] of paths) {
      const r = await server().fetch(path, { method, token: me.token, body });
      expect([path, r.status]).toEqual([path, 403]);
      expect(flatError(r.body).code).toBe("ACCESS_DENIED");
    }
    const service = await server().serviceActor();
    expect((await get(`/voice-models/user/${other.userId}/active`, service.token)).status).toBe(200);
  });

  test("no token is 401 UNAUTHENTICATED", async () => {
    const r = await server().fetch("/voice-models", { body: { provider: "xtts-v2", modelPath: "x" } });
    expect(r.status).toBe(401);
    expect(flatError(r.body)).toMatchObject({ code: "UNAUTHENTICATED", requestId: r.headers.get("x-request-id") });
  });

  test("literal segments win: /voice-models/expiring, /compare, /select-best, /cleanup are not model ids", async () => {
    const me = await server().actor();
    expect((await get("/voice-models/expiring", me.token)).status).toBe(200);
    // A verb the literal path does not serve is refused as a route, never read as a model id.
    const put = await send("PUT", "/voice-models/expiring", me.token, { qualityScore: 0.5 });
    expect(put.status).toBe(404);
    expect(flatError(put.body)).toMatchObject({ code: "ROUTE_NOT_FOUND" });
    expect(put.body.error).toContain("allowed: GET");
    const del = await send("DELETE", "/voice-models/compare", me.token, undefined);
    expect(del.status).toBe(404);
    expect(del.body.error).toContain("allowed: POST");
    // A variable segment that is no model id is INVALID_ARGUMENT naming it.
    const bad = await get("/voice-models/not-a-uuid", me.token);
    expect(bad.status).toBe(400);
    expect(bad.body.error).toContain("modelId");
  });

  test("malformed bodies are 400 naming the field, never 500", async () => {
    const me = await server().actor();
    const model = await createModel(me);
    const cases: Array<[string, string, string, string]> = [
      ["POST", "/voice-models", "{", "body"],
      ["POST", "/voice-models", "[1,2]", "body"],
      ["POST", "/voice-models", '{"provider":"xtts-v2","modelPath":"x","sampleRate":"fast"}', "sampleRate"],
      ["POST", "/voice-models", '{"provider":"xtts-v2","modelPath":"x","bogus":1}', "bogus"],
      ["POST", "/voice-models/compare", '{"modelIds":"abc"}', "modelIds"],
      ["PUT", `/voice-models/${model.id}`, '{"metadata":{"__proto__":{"x":1}}}', "__proto__"],
      ["POST", "/voice-models/select-best", '{"criteria":{"maxLatency":true}}', "maxLatency"],
    ];
    for (const [method, path, body, field] of cases) {
      const r = await server().fetch(path, { method, token: me.token, body });
      expect([body, r.status]).toEqual([body, 400]);
      expect(flatError(r.body).code).toBe("INVALID_ARGUMENT");
      expect(r.body.error).toContain(field);
    }
    const badBool = await get(`/voice-models/user/${me.userId}?isActive=maybe`, me.token);
    expect(badBool.status).toBe(400);
    expect(badBool.body.error).toContain("isActive");
    const big = await server().fetch("/voice-models", { token: me.token, body: JSON.stringify({ provider: "xtts-v2", modelPath: "x".repeat(5 * 1024 * 1024) }) });
    expect(big.status).toBe(429);
    expect(flatError(big.body).code).toBe("REQUEST_TOO_LARGE");
    const { message } = await me.grpc.getVoiceModel({ modelId: model.id });
    expect(message.model?.metadata).toEqual(model.metadata);
  });
});

test("a rate-limited REST call is 429 RATE_LIMITED with retry-after", async () => {
  const limited = await startTestServer({ env: { RATE_LIMITS_ENABLED: "true", RATE_LIMIT_CREATE: "1/3600" } });
  try {
    const me = await limited.actor();
    const body = { provider: "xtts-v2", modelPath: "limited/1.pth" };
    expect((await limited.fetch("/voice-models", { token: me.token, body })).status).toBe(200);
    const second = await limited.fetch("/voice-models", { token: me.token, body: { ...body, modelPath: "limited/2.pth" } });
    expect(second.status).toBe(429);
    expect(flatError(second.body).code).toBe("RATE_LIMITED");
    expect(Number(second.headers.get("retry-after"))).toBeGreaterThan(0);
  } finally {
    await limited.close();
  }
});
