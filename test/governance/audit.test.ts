import { Code } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { purgeAuditEvents } from "../../src/audit/audit-log";
import { expectRpcError } from "../helpers/expect-error";
import { createModel, modelInput, useTestServer, type Actor } from "../helpers/harness";
import { badlySignedToken } from "../helpers/tokens";

const server = useTestServer();

async function eventsOf(admin: Actor, filter: object) {
  const { message } = await admin.grpc.listAuditEvents({ limit: 500, ...filter });
  return message.events;
}

test("every kind of model write is one audit event with actor, target, request id and address", async () => {
  const admin = await server().adminActor();
  const alice = await server().actor();
  const created = await alice.grpc.createVoiceModel(modelInput({ qualityScore: 0.5 }));
  const modelId = created.message.model!.id;
  const second = await createModel(alice, { qualityScore: 0.4 });
  const updated = await alice.connect.updateVoiceModel({ modelId: second.id, qualityScore: 0.45 });
  expect(updated.model!.qualityScore).toBe(0.45);
  await alice.grpc.activateVoiceModel({ modelId: second.id });
  await alice.grpc.deactivateVoiceModel({ modelId: second.id });
  const deleted = await alice.grpc.deleteVoiceModel({ modelId });

  const events = await eventsOf(admin, { userId: alice.userId });
  const actions = events.map((e) => `${e.action}:${e.modelId}`).reverse();
  expect(actions).toEqual([
    `model.created:${modelId}`,
    `model.created:${second.id}`,
    `model.updated:${second.id}`,
    `model.activated:${second.id}`,
    `model.deactivated:${second.id}`,
    `model.deleted:${modelId}`,
  ]);
  const first = events[events.length - 1];
  expect(first).toMatchObject({ actorId: alice.userId, actorRoles: ["user"], targetUserId: alice.userId, resultCode: "OK", count: 1 });
  expect(first.requestId).toBe(created.requestId);
  expect(first.clientAddress).toMatch(/127\.0\.0\.1/);
  expect(events[0].requestId).toBe(deleted.requestId);
  // The activation's deactivation of the previous model is part of the same event.
  const activation = events.find((e) => e.action === "model.activated")!;
  expect((activation.details as any).changes.map((c: any) => c.kind)).toEqual(["deactivated", "activated"]);
});

test("shares, refused access and unauthenticated calls are audited", async () => {
  const admin = await server().adminActor();
  const owner = await server().actor();
  const stranger = await server().actor();
  const m = await createModel(owner);
  await owner.grpc.shareVoiceModel({ modelId: m.id, targetUserIds: [stranger.userId], permissions: ["view"] });
  await owner.grpc.revokeShare({ modelId: m.id });
  const denied = await server().call("grpc", "deleteVoiceModel", { modelId: m.id }, stranger.token);
  expect(denied.code).toBe(Code.PermissionDenied);

  const byModel = await eventsOf(admin, { modelId: m.id });
  expect(byModel.map((e) => e.action).reverse()).toEqual(["model.created", "share.granted", "share.revoked", "access.denied"]);
  const refusal = byModel[0];
  expect(refusal).toMatchObject({ actorId: stranger.userId, resultCode: "ACCESS_DENIED", requestId: denied.requestId });
  expect((refusal.details as any).method).toBe("voicemodel.v1.VoiceModelService/DeleteVoiceModel");

  // Unauthenticated refusals: one event per client address per minute, with the count.
  const before = await eventsOf(admin, { action: "auth.refused" });
  const countBefore = before.reduce((n, e) => n + e.count, 0);
  const bad = await badlySignedToken("mallory");
  await server().call("grpc", "whoAmI", {}, bad);
  await server().call("connect", "whoAmI", {}, bad);
  await server().call("connect", "listVoiceModels", {});
  const after = await eventsOf(admin, { action: "auth.refused" });
  expect(after.reduce((n, e) => n + e.count, 0) - countBefore).toBe(3);
  expect(after.length - before.length).toBeLessThanOrEqual(2); // one row per minute (two if the minute turned)
  expect(after[0]).toMatchObject({ resultCode: "UNAUTHENTICATED", actorId: "" });
});

test("users list only their own events; admins filter by user, model, action and time, with paging", async () => {
  const admin = await server().adminActor();
  const alice = await server().actor();
  const bob = await server().actor();
  const start = new Date(Date.now() - 1000);
  for (let i = 0; i < 5; i++) await createModel(alice);
  await createModel(bob);

  const own = (await alice.grpc.listAuditEvents({})).message.events;
  expect(own).toHaveLength(5);
  expect(own.every((e) => e.targetUserId === alice.userId || e.actorId === alice.userId)).toBe(true);
  expectRpcError(await server().call("grpc", "listAuditEvents", { userId: bob.userId }, alice.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });

  const seen: string[] = [];
  let pageToken = "";
  do {
    const { message } = await admin.grpc.listAuditEvents({ userId: alice.userId, action: "model.created", limit: 2, pageToken });
    seen.push(...message.events.map((e) => e.id));
    pageToken = message.nextPageToken;
  } while (pageToken);
  expect(new Set(seen).size).toBe(5);

  const future = timestampFromDate(new Date(Date.now() + 60_000));
  expect((await admin.grpc.listAuditEvents({ userId: alice.userId, since: future })).message.events).toEqual([]);
  expect((await admin.grpc.listAuditEvents({ userId: alice.userId, since: timestampFromDate(start), until: future })).message.events.map((e) => e.action).sort()).toEqual([
    "access.denied", // her refused attempt to read Bob's events
    ...Array(5).fill("model.created"),
  ]);
  expectRpcError(await server().call("connect", "listAuditEvents", { limit: 501 }, admin.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "limit" });
  expectRpcError(await server().call("connect", "listAuditEvents", { pageToken: "junk" }, admin.token), {
    code: Code.InvalidArgument,
    reason: "INVALID_ARGUMENT",
    field: "pageToken",
  });
});

test("audit rows past the retention are purged", async () => {
  const knex = server().db.knex;
  await knex("audit_events").insert({ action: "test.old", at: knex.raw("now() - interval '91 days'") });
  await knex("audit_events").insert({ action: "test.recent", at: knex.raw("now() - interval '89 days'") });
  expect(await purgeAuditEvents(knex, 90)).toBeGreaterThanOrEqual(1);
  expect(await knex("audit_events").where("action", "test.old")).toEqual([]);
  expect(await knex("audit_events").where("action", "test.recent")).toHaveLength(1);
});

test("RecordUsage and RecordUsageBatch are one event per call", async () => {
  const admin = await server().adminActor();
  const tts = await server().serviceActor();
  const alice = await server().actor();
  const m = await createModel(alice);
  const usage = (key: string) => ({ modelId: m.id, userId: alice.userId, latencyMs: 120, cost: 0.01, characters: 42n, idempotencyKey: key, usedAt: timestampFromDate(new Date()) });
  await tts.grpc.recordUsage(usage("k1"));
  await tts.grpc.recordUsageBatch({ events: [usage("k2"), usage("k3"), usage("k4")] });
  const events = await eventsOf(admin, { action: "usage.recorded", userId: alice.userId });
  expect(events).toHaveLength(2);
  expect(events[0]).toMatchObject({ actorId: tts.userId, actorRoles: ["service"], targetUserId: alice.userId });
  expect((events[0].details as any).records).toBe(3);
  expect(events[1].modelId).toBe(m.id);
  // The event commits with the usage: a batch refused inside its transaction (a reused key with
  // another payload) leaves no event behind.
  const refused = await server().call("grpc", "recordUsageBatch", { events: [usage("k5"), { ...usage("k1"), latencyMs: 999 }] }, tts.token);
  expect(refused.errorInfo?.reason).toBe("IDEMPOTENCY_KEY_REUSED");
  expect(await eventsOf(admin, { action: "usage.recorded", userId: alice.userId })).toHaveLength(2);
});
