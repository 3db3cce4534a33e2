import { createModel, useTestServer } from "./helpers/harness";

// The REST paths of the proto's google.api.http annotations, through the real server with fetch:
// routing, body/query/path into the request, the guarded handler, the reply and the flat errors.
const server = useTestServer();

const flatError = (body: any) => {
  expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId", "timestamp"]);
  expect(Number.isNaN(Date.parse(body.timestamp))).toBe(false);
  return body;
};

test("POST /voice-models creates, GET /voice-models/{modelId} reads it back (the model unwrapped)", async () => {
  const alice = await server().actor();
  const created = await server().fetch("/voice-models", { token: alice.token, body: { provider: "xtts-v2", modelPath: "a/1.pth", qualityScore: 0.7 } });
  expect(created.status).toBe(200);
  expect(created.body).toMatchObject({ userId: alice.userId, provider: "xtts-v2", qualityScore: 0.7, isActive: true });
  const read = await server().fetch(`/voice-models/${created.body.id}`, { token: alice.token });
  expect(read.status).toBe(200);
  expect(read.body.id).toBe(created.body.id);
});

test("GET /voice-models/user/{userId} maps limit and offset onto the list's own offset paging", async () => {
  const bob = await server().actor();
  for (const score of [0.1, 0.2, 0.3]) await createModel(bob, { qualityScore: score, status: "training" });
  const page = await server().fetch(`/voice-models/user/${bob.userId}?limit=2&offset=1`, { token: bob.token });
  expect(page.status).toBe(200);
  expect(page.body.total).toBe(3);
  expect(page.body.models.map((m: any) => m.qualityScore)).toEqual([0.2, 0.1]);
  const filtered = await server().fetch(`/voice-models/user/${bob.userId}?minQualityScore=0.25&is_active=false`, { token: bob.token });
  expect(filtered.body.models.map((m: any) => m.qualityScore)).toEqual([0.3]);
  const sorted = await server().fetch(`/voice-models/user/${bob.userId}?order_by=${encodeURIComponent("quality_score asc")}&limit=2`, { token: bob.token });
  expect(sorted.body.models.map((m: any) => m.qualityScore)).toEqual([0.1, 0.2]);
  const next = await server().fetch(`/voice-models/user/${bob.userId}?orderBy=${encodeURIComponent("quality_score asc")}&pageToken=${sorted.body.nextPageToken}`, { token: bob.token });
  expect(next.body.models.map((m: any) => m.qualityScore)).toEqual([0.3]);
});

test("DELETE /voice-models/{modelId} soft-deletes; the model is then 404 in the flat error shape", async () => {
  const carol = await server().actor();
  const model = await createModel(carol);
  const deleted = await server().fetch(`/voice-models/${model.id}`, { method: "DELETE", token: carol.token });
  expect(deleted.status).toBe(200);
  expect(deleted.body.model.id).toBe(model.id);
  const gone = await server().fetch(`/voice-models/${model.id}`, { token: carol.token });
  expect(gone.status).toBe(404);
  expect(flatError(gone.body)).toMatchObject({ code: "VOICE_MODEL_NOT_FOUND", requestId: gone.headers.get("x-request-id") });
});

test("errors: 401 without a token, 403 for another user's id, 400 naming an unknown field or query parameter", async () => {
  const dave = await server().actor();
  const noToken = await server().fetch(`/voice-models/user/${dave.userId}`);
  expect(noToken.status).toBe(401);
  expect(flatError(noToken.body).code).toBe("UNAUTHENTICATED");
  const other = await server().fetch("/voice-models/user/someone-else", { token: dave.token });
  expect(other.status).toBe(403);
  expect(flatError(other.body).code).toBe("ACCESS_DENIED");
  const unknown = await server().fetch("/voice-models", { token: dave.token, body: { provider: "xtts-v2", modelPath: "x", colour: "red" } });
  expect(unknown.status).toBe(400);
  expect(flatError(unknown.body)).toMatchObject({ code: "INVALID_ARGUMENT" });
  expect(unknown.body.error).toContain("colour");
  const badQuery = await server().fetch(`/voice-models/user/${dave.userId}?colour=red`, { token: dave.token });
  expect(badQuery.status).toBe(400);
  expect(badQuery.body.error).toContain("colour");
  const broken = await server().fetch("/voice-models", { token: dave.token, body: "{not json" });
  expect(broken.status).toBe(400);
  expect(flatError(broken.body).error).toContain("body");
});

test("an unknown REST path or verb is 404 ROUTE_NOT_FOUND in the flat shape", async () => {
  const erin = await server().actor();
  const nothing = await server().fetch("/voice-models/a/b/c/d", { token: erin.token });
  expect(nothing.status).toBe(404);
  expect(flatError(nothing.body).code).toBe("ROUTE_NOT_FOUND");
  const verb = await server().fetch("/voice-models", { method: "PATCH", token: erin.token, body: {} });
  expect(verb.status).toBe(404);
  expect(verb.body.error).toContain("allowed: POST");
});

test("POST /voice-models/compare: an optional userId, the caller's own or (service/admin) the user's reads", async () => {
  const frank = await server().actor();
  const [a, b] = [await createModel(frank, { qualityScore: 0.4 }), await createModel(frank, { qualityScore: 0.9 })];
  const own = await server().fetch("/voice-models/compare", { token: frank.token, body: { modelIds: [a.id, b.id], userId: frank.userId } });
  expect(own.status).toBe(200);
  expect(own.body.models[0].model.id).toBe(b.id);
  const other = await server().fetch("/voice-models/compare", { token: frank.token, body: { modelIds: [a.id, b.id], userId: "not-frank" } });
  expect(other.status).toBe(403);
  const admin = await server().adminActor();
  const asFrank = await server().fetch("/voice-models/compare", { token: admin.token, body: { modelIds: [a.id, b.id], userId: frank.userId } });
  expect(asFrank.status).toBe(200);
  // Read as another user, Frank's models are not theirs to compare.
  const asStranger = await server().fetch("/voice-models/compare", { token: admin.token, body: { modelIds: [a.id, b.id], userId: "stranger" } });
  expect(asStranger.status).toBe(403);
});

test("POST /voice-models/{modelId}/share takes permissions as one string or a list; a body modelId must match the path", async () => {
  const gina = await server().actor();
  const model = await createModel(gina);
  const one = await server().fetch(`/voice-models/${model.id}/share`, { token: gina.token, body: { targetUserIds: ["hank"], permissions: "view" } });
  expect(one.status).toBe(200);
  expect(one.body.shares).toEqual([expect.objectContaining({ modelId: model.id, targetUserId: "hank", permission: "view" })]);
  const many = await server().fetch(`/voice-models/${model.id}/share`, { token: gina.token, body: { targetUserIds: ["hank"], permissions: ["use"] } });
  expect(many.body.shares[0].permission).toBe("use");
  const other = await createModel(gina);
  const clash = await server().fetch(`/voice-models/${model.id}/share`, { token: gina.token, body: { modelId: other.id, targetUserIds: ["hank"], permissions: "view" } });
  expect(clash.status).toBe(400);
  expect(clash.body.error).toContain("modelId");
});
