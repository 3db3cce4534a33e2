import { Code } from "@connectrpc/connect";
import { expectGrpcError } from "./helpers/expect-error";
import { activeId, activeIds, createModel, sleep, uniqueUser, useTestServer, type Actor } from "./helpers/harness";

const server = useTestServer();

/** The user's active model ids seen both ways; they must agree and hold at most one. */
async function theActive(actor: Actor): Promise<string | undefined> {
  const [listed, single] = await Promise.all([activeIds(actor), activeId(actor)]);
  expect(listed.length).toBeLessThanOrEqual(1);
  expect(listed[0]).toBe(single);
  return single;
}

async function isActive(actor: Actor, modelId: string): Promise<boolean> {
  return (await actor.grpc.getVoiceModel({ modelId })).message.model!.isActive;
}

describe("activation on create", () => {
  test("the first completed model becomes active", async () => {
    const alice = await server().actor();
    expect(await theActive(alice)).toBeUndefined();
    const first = await createModel(alice, { qualityScore: 0.1 });
    expect(first.isActive).toBe(true);
    expect(await theActive(alice)).toBe(first.id);
  });

  test("a completed model scoring above 0.8 takes over; the previous one is deactivated", async () => {
    const alice = await server().actor();
    const first = await createModel(alice, { qualityScore: 0.95 });
    const better = await createModel(alice, { qualityScore: 0.81 });
    expect(better.isActive).toBe(true);
    expect(await isActive(alice, first.id)).toBe(false);
    expect(await theActive(alice)).toBe(better.id);
  });

  test("0.801 takes over (above 0.8)", async () => {
    const alice = await server().actor();
    await createModel(alice, { qualityScore: 0.2 });
    const model = await createModel(alice, { qualityScore: 0.801 });
    expect(model.isActive).toBe(true);
  });

  test.each([
    ["score 0.8", { qualityScore: 0.8 }],
    ["score 0.8004 (stored 0.800)", { qualityScore: 0.8004 }],
    ["components weighing 0.8004 (stored 0.800)", { qualityComponents: { similarity: 0.801, naturalness: 0.8, clarity: 0.8, consistency: 0.8 } }],
    ["score 0.5", { qualityScore: 0.5 }],
  ])("%s does not take over", async (_name, fields) => {
    const alice = await server().actor();
    const first = await createModel(alice, { qualityScore: 0.1 });
    const second = await createModel(alice, fields);
    expect(second.qualityScore).toBeLessThanOrEqual(0.8);
    expect(second.isActive).toBe(false);
    expect(await theActive(alice)).toBe(first.id);
  });

  test("components weighing above 0.8 take over", async () => {
    const alice = await server().actor();
    await createModel(alice, { qualityScore: 0.3 });
    const model = await createModel(alice, {
      qualityComponents: { similarity: 0.9, naturalness: 0.8, clarity: 0.8, consistency: 0.7 }, // 0.83
    });
    expect(model.qualityScore).toBe(0.83);
    expect(model.isActive).toBe(true);
  });

  test.each(["pending", "training", "failed"])("a %s model is never activated, even scoring 1", async (status) => {
    const alice = await server().actor();
    const model = await createModel(alice, { status, qualityScore: 1 });
    expect(model.isActive).toBe(false);
    expect(await theActive(alice)).toBeUndefined();
  });
});

describe("activation on status change", () => {
  test("a pending model that becomes completed is activated when the user has none active", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const model = await createModel(training, { userId, status: "pending", qualityScore: 0.2 });
    const { message } = await training.grpc.updateVoiceModel({ modelId: model.id, status: "completed" });
    expect(message.model!.isActive).toBe(true);
    expect(await activeId(training, userId)).toBe(model.id);
  });

  test("a model becoming completed above 0.8 takes over; at or below 0.8 it does not", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const current = await createModel(training, { userId, qualityScore: 0.5 });
    const low = await createModel(training, { userId, status: "training", qualityScore: 0.8 });
    const high = await createModel(training, { userId, status: "training", qualityScore: 0.9 });

    const lowDone = (await training.grpc.updateVoiceModel({ modelId: low.id, status: "completed" })).message.model!;
    expect(lowDone.isActive).toBe(false);
    expect(await activeId(training, userId)).toBe(current.id);

    const highDone = (await training.grpc.updateVoiceModel({ modelId: high.id, status: "completed" })).message.model!;
    expect(highDone.isActive).toBe(true);
    expect(await activeIds(training, userId)).toEqual([high.id]);
  });

  test("an active model leaving completed is replaced by the next best (highest score, newest on ties)", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const active = await createModel(training, { userId, qualityScore: 0.9 });
    const olderTie = await createModel(training, { userId, qualityScore: 0.7 });
    await sleep(10);
    const newerTie = await createModel(training, { userId, qualityScore: 0.7 });
    await createModel(training, { userId, qualityScore: 0.3 });
    await createModel(training, { userId, qualityScore: 0.99, status: "pending" }); // not eligible
    expect(await activeId(training, userId)).toBe(active.id);

    const { message } = await training.grpc.updateVoiceModel({ modelId: active.id, status: "failed" });
    expect(message.model).toMatchObject({ status: "failed", isActive: false });
    expect(await activeIds(training, userId)).toEqual([newerTie.id]);
    expect(olderTie.id).not.toBe(newerTie.id);
  });

  test("an active model leaving completed with no other completed model leaves none active", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const only = await createModel(training, { userId });
    await createModel(training, { userId, status: "pending" });
    await training.grpc.updateVoiceModel({ modelId: only.id, status: "training" });
    expect(await activeIds(training, userId)).toEqual([]);
    expect(await activeId(training, userId)).toBeUndefined();
  });

  test("an inactive model leaving completed changes no activation", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const active = await createModel(training, { userId, qualityScore: 0.4 });
    const other = await createModel(training, { userId, qualityScore: 0.3 });
    await training.grpc.updateVoiceModel({ modelId: other.id, status: "failed" });
    expect(await activeIds(training, userId)).toEqual([active.id]);
  });

  test("later score edits never change activation", async () => {
    const alice = await server().actor();
    const active = await createModel(alice, { qualityScore: 0.5 });
    const other = await createModel(alice, { qualityScore: 0.4 });
    await alice.grpc.updateVoiceModel({ modelId: other.id, qualityScore: 0.99 });
    await alice.grpc.updateVoiceModel({ modelId: active.id, qualityScore: 0.01 });
    expect(await isActive(alice, active.id)).toBe(true);
    expect(await isActive(alice, other.id)).toBe(false);
    // Nor does a score edit of a model while the user has none active.
    await alice.grpc.deactivateVoiceModel({ modelId: active.id });
    await alice.grpc.updateVoiceModel({ modelId: other.id, qualityScore: 0.95 });
    expect(await theActive(alice)).toBeUndefined();
  });

  test("setting completed on an already completed model changes nothing about activation", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const active = await createModel(training, { userId, qualityScore: 0.1 });
    const high = await createModel(training, { userId, qualityScore: 0.7 });
    await training.grpc.updateVoiceModel({ modelId: high.id, qualityScore: 0.95 });
    await training.grpc.updateVoiceModel({ modelId: high.id, status: "completed" });
    expect(await activeIds(training, userId)).toEqual([active.id]);
  });
});

describe("ActivateVoiceModel / DeactivateVoiceModel", () => {
  test("activating makes the model the only active one", async () => {
    const alice = await server().actor();
    const first = await createModel(alice, { qualityScore: 0.9 });
    const second = await createModel(alice, { qualityScore: 0.2 });
    const { message } = await alice.grpc.activateVoiceModel({ modelId: second.id });
    expect(message.model).toMatchObject({ id: second.id, isActive: true });
    expect(await isActive(alice, first.id)).toBe(false);
    expect(await theActive(alice)).toBe(second.id);
  });

  test("activating the active model is ALREADY_EXISTS / ALREADY_ACTIVE", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    await expectGrpcError(alice.grpc.activateVoiceModel({ modelId: model.id }), {
      code: Code.AlreadyExists,
      reason: "ALREADY_ACTIVE",
      modelId: model.id,
      message: model.id,
    });
    expect(await theActive(alice)).toBe(model.id);
  });

  test.each(["pending", "training", "failed"])("activating a %s model is FAILED_PRECONDITION / MODEL_NOT_COMPLETED", async (status) => {
    const alice = await server().actor();
    const active = await createModel(alice);
    const model = await createModel(alice, { status });
    await expectGrpcError(alice.grpc.activateVoiceModel({ modelId: model.id }), {
      code: Code.FailedPrecondition,
      reason: "MODEL_NOT_COMPLETED",
      modelId: model.id,
      message: model.id,
    });
    expect(await theActive(alice)).toBe(active.id);
  });

  test("deactivating leaves the user with no active model until one is activated", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const { message } = await alice.grpc.deactivateVoiceModel({ modelId: model.id });
    expect(message.model).toMatchObject({ id: model.id, isActive: false });
    expect(await theActive(alice)).toBeUndefined();
    // A new completed model then activates (the user has none active), whatever its score.
    const next = await createModel(alice, { qualityScore: 0.1 });
    expect(next.isActive).toBe(true);
    // Re-activating the old one switches back.
    await alice.grpc.activateVoiceModel({ modelId: model.id });
    expect(await theActive(alice)).toBe(model.id);
  });

  test("deactivating an inactive model changes nothing", async () => {
    const alice = await server().actor();
    const active = await createModel(alice);
    const other = await createModel(alice, { qualityScore: 0.1 });
    const { message } = await alice.grpc.deactivateVoiceModel({ modelId: other.id });
    expect(message.model).toEqual(other);
    expect(await theActive(alice)).toBe(active.id);
  });

  test("the activation change bumps the etag of both models", async () => {
    const alice = await server().actor();
    const first = await createModel(alice);
    const second = await createModel(alice, { qualityScore: 0.1 });
    const activated = (await alice.grpc.activateVoiceModel({ modelId: second.id })).message.model!;
    expect(activated.etag).not.toBe(second.etag);
    const firstNow = (await alice.grpc.getVoiceModel({ modelId: first.id })).message.model!;
    expect(firstNow.etag).not.toBe(first.etag);
  });
});

describe("DeleteVoiceModel", () => {
  test("deleting the active model activates the next best: highest score, newest on ties", async () => {
    const alice = await server().actor();
    const active = await createModel(alice, { qualityScore: 0.95 });
    await createModel(alice, { qualityScore: 0.6 });
    const olderTie = await createModel(alice, { qualityScore: 0.75 });
    await sleep(10);
    const newerTie = await createModel(alice, { qualityScore: 0.75 });
    await createModel(alice, { qualityScore: 0.99, status: "failed" }); // not eligible
    const { message } = await alice.grpc.deleteVoiceModel({ modelId: active.id });
    expect(message.model!.id).toBe(active.id);
    expect(message.model!.isActive).toBe(false);
    expect(message.model!.deletedAt).toBeDefined();
    expect(message.activeModelId).toBe(newerTie.id);
    expect(await theActive(alice)).toBe(newerTie.id);

    // And again: the older of the tie is next.
    const again = await alice.grpc.deleteVoiceModel({ modelId: newerTie.id });
    expect(again.message.activeModelId).toBe(olderTie.id);
  });

  test("after a takeover, deleting the new active model brings back the best remaining one", async () => {
    const alice = await server().actor();
    const low = await createModel(alice, { qualityScore: 0.2 });
    const high = await createModel(alice, { qualityScore: 0.85 }); // took over from low
    expect(high.isActive).toBe(true);
    const { message } = await alice.grpc.deleteVoiceModel({ modelId: high.id });
    expect(message.activeModelId).toBe(low.id);
  });

  test("deleting the last completed model leaves none active and the reply has no activeModelId", async () => {
    const alice = await server().actor();
    const only = await createModel(alice);
    await createModel(alice, { status: "pending", qualityScore: 0.9 });
    const { message } = await alice.grpc.deleteVoiceModel({ modelId: only.id });
    expect(message.activeModelId).toBeUndefined();
    expect(await theActive(alice)).toBeUndefined();
  });

  test("deleting an inactive model keeps the active one and names it", async () => {
    const alice = await server().actor();
    const active = await createModel(alice, { qualityScore: 0.5 });
    const other = await createModel(alice, { qualityScore: 0.7 });
    const { message } = await alice.grpc.deleteVoiceModel({ modelId: other.id });
    expect(message.activeModelId).toBe(active.id);
    expect(await theActive(alice)).toBe(active.id);
  });

  test("deleting an inactive model while none is active names none", async () => {
    const alice = await server().actor();
    const a = await createModel(alice);
    const b = await createModel(alice, { qualityScore: 0.1 });
    await alice.grpc.deactivateVoiceModel({ modelId: a.id });
    const { message } = await alice.grpc.deleteVoiceModel({ modelId: b.id });
    expect(message.activeModelId).toBeUndefined();
    expect(await theActive(alice)).toBeUndefined();
  });

  test("a deleted model is NOT_FOUND for get, update, activate, deactivate and delete", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    await alice.grpc.deleteVoiceModel({ modelId: model.id });
    const notFound = { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: model.id, message: model.id };
    await expectGrpcError(alice.grpc.getVoiceModel({ modelId: model.id }), notFound);
    await expectGrpcError(alice.grpc.updateVoiceModel({ modelId: model.id, qualityScore: 0.5 }), notFound);
    await expectGrpcError(alice.grpc.activateVoiceModel({ modelId: model.id }), notFound);
    await expectGrpcError(alice.grpc.deactivateVoiceModel({ modelId: model.id }), notFound);
    await expectGrpcError(alice.grpc.deleteVoiceModel({ modelId: model.id }), notFound);
    // It stays listed only with showDeleted, as deleted and inactive.
    expect((await alice.grpc.listVoiceModels({})).message.total).toBe(0);
    const { message } = await alice.grpc.listVoiceModels({ showDeleted: true });
    expect(message.models).toHaveLength(1);
    expect(message.models[0]).toMatchObject({ id: model.id, isActive: false });
    expect(message.models[0].deletedAt).toBeDefined();
  });

  test("a deleted model is NOT_FOUND for the service role too", async () => {
    const training = await server().serviceActor();
    const model = await createModel(training, { userId: uniqueUser() });
    await training.grpc.deleteVoiceModel({ modelId: model.id });
    await expectGrpcError(training.grpc.getVoiceModel({ modelId: model.id }), {
      code: Code.NotFound,
      reason: "VOICE_MODEL_NOT_FOUND",
      modelId: model.id,
    });
  });
});
