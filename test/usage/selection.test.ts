import { Code } from "@connectrpc/connect";
import { expectGrpcError } from "../helpers/expect-error";
import { activeId, createModel, useTestServer, type Actor } from "../helpers/harness";
import { usageInput } from "./helpers";

const server = useTestServer();

async function use(tts: Actor, owner: Actor, modelId: string, latencies: number[]) {
  await tts.grpc.recordUsageBatch({ events: latencies.map((latencyMs) => usageInput(modelId, owner.userId, { latencyMs })) });
}

describe("SelectBestVoiceModel", () => {
  test("ranks known latency within maxLatency first, unknown next, excludes known above it", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const fastLow = await createModel(alice, { qualityScore: 0.5 });
    const unusedHigh = await createModel(alice, { qualityScore: 0.95 });
    const slowHigh = await createModel(alice, { qualityScore: 0.9 });
    const fastMid = await createModel(alice, { qualityScore: 0.7 });
    await use(tts, alice, fastLow.id, [100, 200]);
    await use(tts, alice, slowHigh.id, [900, 1100]);
    await use(tts, alice, fastMid.id, [250, 350]);

    const { message } = await alice.grpc.selectBestVoiceModel({ criteria: { maxLatency: 500 } });
    expect(message.model!.id).toBe(fastMid.id);
    expect(message.activated).toBe(false);
    expect(message.reason).toMatch(/highest quality_score/);
    expect(message.others.map((o) => [o.modelId, o.excluded])).toEqual([
      [fastLow.id, false],
      [unusedHigh.id, false],
      [slowHigh.id, true],
    ]);
    expect(message.others[1].reason).toMatch(/unknown latency/);
    expect(message.others[2].reason).toMatch(/average latency 1000 ms is above maxLatency 500/);

    // Without maxLatency, quality decides.
    expect((await alice.grpc.selectBestVoiceModel({})).message.model!.id).toBe(unusedHigh.id);
  });

  test("minQualityScore excludes; nothing qualifying is not an error", async () => {
    const alice = await server().actor();
    const low = await createModel(alice, { qualityScore: 0.3 });
    const pending = await createModel(alice, { qualityScore: 0.99, status: "training" });
    const { message } = await alice.grpc.selectBestVoiceModel({ criteria: { minQualityScore: 0.5 } });
    expect(message.model).toBeUndefined();
    expect(message.reason).toMatch(/no model qualifies/);
    expect(message.others).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ modelId: low.id, excluded: true, reason: expect.stringMatching(/below minQualityScore 0.500/) }),
        expect.objectContaining({ modelId: pending.id, excluded: true, reason: expect.stringMatching(/status is training/) }),
      ]),
    );
    const carol = await server().actor();
    expect((await carol.grpc.selectBestVoiceModel({ activate: true })).message).toMatchObject({ reason: "the user has no live models", activated: false });
  });

  test("ties: preferred provider first, then newest", async () => {
    const alice = await server().actor();
    const a = await createModel(alice, { qualityScore: 0.6, provider: "openai-tts" });
    const b = await createModel(alice, { qualityScore: 0.6, provider: "xtts-v2" });
    const c = await createModel(alice, { qualityScore: 0.6, provider: "xtts-v2" });
    const preferred = await alice.grpc.selectBestVoiceModel({ criteria: { preferredProvider: "openai-tts" } });
    expect(preferred.message.model!.id).toBe(a.id);
    expect(preferred.message.reason).toMatch(/preferred provider openai-tts/);
    const newest = await alice.grpc.selectBestVoiceModel({ criteria: { preferredProvider: "xtts-v2" } });
    expect(newest.message.model!.id).toBe(c.id);
    expect(newest.message.reason).toMatch(/newest/);
    expect(newest.message.others.map((o) => o.modelId)).toEqual([b.id, a.id]);
  });

  test("activate makes the choice active in the same call; GetActive sees it at once", async () => {
    const alice = await server().actor();
    const first = await createModel(alice, { qualityScore: 0.4 });
    const better = await createModel(alice, { qualityScore: 0.6 });
    expect(await activeId(alice)).toBe(first.id); // warms the in-process cache
    const { message } = await alice.grpc.selectBestVoiceModel({ activate: true });
    expect(message).toMatchObject({ activated: true, model: { id: better.id, isActive: true } });
    expect(await activeId(alice)).toBe(better.id);
    expect((await alice.grpc.getVoiceModel({ modelId: first.id })).message.model!.isActive).toBe(false);
    // Already active: nothing to do.
    expect((await alice.grpc.selectBestVoiceModel({ activate: true })).message).toMatchObject({ activated: false, model: { id: better.id } });
  });

  test("bad criteria are INVALID_ARGUMENT naming the field; other users are refused", async () => {
    const alice = await server().actor();
    const bob = await server().actor();
    const tts = await server().serviceActor();
    await expectGrpcError(alice.grpc.selectBestVoiceModel({ criteria: { minQualityScore: 1.5 } }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "criteria.minQualityScore" });
    await expectGrpcError(alice.grpc.selectBestVoiceModel({ criteria: { preferredProvider: "acme" } }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "criteria.preferredProvider" });
    await expectGrpcError(alice.grpc.selectBestVoiceModel({ criteria: { maxLatency: -1 } }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "criteria.maxLatency" });
    await expectGrpcError(bob.grpc.selectBestVoiceModel({ userId: alice.userId, activate: true }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    await createModel(alice, { qualityScore: 0.2 });
    expect((await tts.grpc.selectBestVoiceModel({ userId: alice.userId })).message.model).toBeDefined();
  });
});

describe("CompareVoiceModels", () => {
  test("returns each model with its usage and recommends the best, saying why", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const a = await createModel(alice, { qualityComponents: { similarity: 0.9, naturalness: 0.8, clarity: 0.7, consistency: 0.6 } });
    const b = await createModel(alice, { qualityScore: 0.5 });
    const c = await createModel(alice, { qualityScore: 0.99, status: "failed" });
    await use(tts, alice, b.id, [100, 300]);
    const { message } = await alice.grpc.compareVoiceModels({ modelIds: [b.id, c.id, a.id] });
    expect(message.models.map((m) => [m.model!.id, m.rank])).toEqual([
      [a.id, 1],
      [b.id, 2],
      [c.id, 3],
    ]);
    expect(message.models[0].model!.qualityComponents).toMatchObject({ similarity: 0.9, naturalness: 0.8, clarity: 0.7, consistency: 0.6 });
    expect(message.models[1].usage).toMatchObject({ modelId: b.id, usageCount: 2, averageLatency: 200 });
    expect(message.models[1].note).toMatch(/quality_score 0.500 is lower than 0.800/);
    expect(message.models[2].note).toMatch(/does not qualify: status is failed/);
    expect(message.recommendation).toMatchObject({ modelId: a.id, decidedBy: "quality_score" });
    expect(message.recommendation!.reason).toMatch(a.id);
  });

  test("a tie is decided by the newest", async () => {
    const alice = await server().actor();
    const a = await createModel(alice, { qualityScore: 0.5 });
    const b = await createModel(alice, { qualityScore: 0.5 });
    const { message } = await alice.grpc.compareVoiceModels({ modelIds: [a.id, b.id] });
    expect(message.recommendation).toMatchObject({ modelId: b.id, decidedBy: "newest" });
  });

  test("every id must exist and be usable by the caller: the first that is not is named", async () => {
    const alice = await server().actor();
    const bob = await server().actor();
    const mine = await createModel(alice);
    const mine2 = await createModel(alice);
    const bobs = await createModel(bob);
    const gone = await createModel(alice);
    await alice.grpc.deleteVoiceModel({ modelId: gone.id });
    const unknown = "00000000-0000-4000-8000-000000000001";
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: [mine.id, bobs.id] }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED", modelId: bobs.id });
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: [mine.id, unknown] }), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: unknown });
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: [mine.id, gone.id] }), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: gone.id });
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: [mine.id] }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "modelIds" });
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: Array(11).fill(mine.id) }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "modelIds" });
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: [mine.id, mine.id] }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "modelIds[1]" });
    await expectGrpcError(alice.grpc.compareVoiceModels({ modelIds: [mine.id, "x"] }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "modelIds[1]" });
    // Service callers compare any users' models.
    const tts = await server().serviceActor();
    expect((await tts.grpc.compareVoiceModels({ modelIds: [mine2.id, bobs.id] })).message.models).toHaveLength(2);
  });
});

describe("the next best on delete uses the same ranking", () => {
  test("highest score, newest on ties, whatever the usage", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const active = await createModel(alice, { qualityScore: 0.9 });
    const used = await createModel(alice, { qualityScore: 0.6 });
    const older = await createModel(alice, { qualityScore: 0.7 });
    const newer = await createModel(alice, { qualityScore: 0.7 });
    await use(tts, alice, used.id, [10]);
    expect(await activeId(alice)).toBe(active.id);
    const { message } = await alice.grpc.deleteVoiceModel({ modelId: active.id });
    expect(message.activeModelId).toBe(newer.id);
    await alice.grpc.deleteVoiceModel({ modelId: newer.id });
    expect(await activeId(alice)).toBe(older.id);
  });
});

describe("shared models (sharing's canUse seam)", () => {
  test("a model shared for use can be compared, its stats read, and its use by the sharee recorded", async () => {
    const alice = await server().actor();
    const bob = await server().actor();
    const tts = await server().serviceActor();
    const alices = await createModel(alice, { qualityScore: 0.9 });
    const viewOnly = await createModel(alice, { qualityScore: 0.8 });
    const bobs = await createModel(bob, { qualityScore: 0.3 });
    await alice.grpc.shareVoiceModel({ modelId: alices.id, targetUserIds: [bob.userId], permissions: ["use"] });
    await alice.grpc.shareVoiceModel({ modelId: viewOnly.id, targetUserIds: [bob.userId], permissions: ["view"] });

    await tts.grpc.recordUsage(usageInput(alices.id, bob.userId, { latencyMs: 120 }));
    const { message } = await bob.grpc.compareVoiceModels({ modelIds: [bobs.id, alices.id] });
    expect(message.recommendation!.modelId).toBe(alices.id);
    expect(message.models[0].usage).toMatchObject({ usageCount: 1, averageLatency: 120 });
    expect((await bob.grpc.getVoiceModelUsageStats({ modelId: alices.id })).message.usageCount).toBe(1);

    // "view" is not enough to compare, read stats, or synthesize.
    await expectGrpcError(bob.grpc.compareVoiceModels({ modelIds: [bobs.id, viewOnly.id] }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED", modelId: viewOnly.id });
    await expectGrpcError(bob.grpc.getVoiceModelUsageStats({ modelId: viewOnly.id }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED", modelId: viewOnly.id });
    await expectGrpcError(tts.grpc.recordUsage(usageInput(viewOnly.id, bob.userId)), { code: Code.PermissionDenied, reason: "ACCESS_DENIED", modelId: viewOnly.id });
    // Usage by the sharee counts toward the owner's analytics.
    expect((await alice.grpc.getVoiceModelAnalytics({})).message.totalUsageCount).toBe(1);
  });
});
