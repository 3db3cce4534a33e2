import { Code } from "@connectrpc/connect";
import { expectConnectError, expectGrpcError } from "../helpers/expect-error";
import { createModel, useTestServer } from "../helpers/harness";
import { at, usageInput } from "./helpers";

const server = useTestServer();

async function stats(modelId: string, token: string) {
  return (await server().grpc(token).getVoiceModelUsageStats({ modelId })).message;
}

describe("RecordUsage", () => {
  test("the service records an event; stats count it", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const reply = await tts.grpc.recordUsage(usageInput(model.id, alice.userId, { latencyMs: 300, cost: 0.25, qualityRating: 4 }));
    expect(reply.message.duplicate).toBe(false);
    const s = await stats(model.id, alice.token);
    expect(s).toMatchObject({ modelId: model.id, usageCount: 1, totalCost: 0.25, averageLatency: 300, qualityRating: 4 });
    expect(s.lastUsed).toBeDefined();
  });

  test("a retry with the same key and payload is accepted and counted once (both transports)", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const event = usageInput(model.id, alice.userId, { usedAt: at("2026-01-02T10:00:00Z") });
    expect((await tts.grpc.recordUsage(event)).message.duplicate).toBe(false);
    expect((await tts.grpc.recordUsage(event)).message.duplicate).toBe(true);
    expect((await tts.connect.recordUsage(event)).duplicate).toBe(true);
    // Without usedAt the retry still matches (absent stays absent in the payload).
    const undated = usageInput(model.id, alice.userId);
    await tts.grpc.recordUsage(undated);
    expect((await tts.grpc.recordUsage(undated)).message.duplicate).toBe(true);
    expect((await stats(model.id, alice.token)).usageCount).toBe(2);
  });

  test("the same key with another payload is ALREADY_EXISTS and changes nothing", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const event = usageInput(model.id, alice.userId, { cost: 1 });
    await tts.grpc.recordUsage(event);
    await expectGrpcError(tts.grpc.recordUsage({ ...event, cost: 2 }), {
      code: Code.AlreadyExists,
      reason: "IDEMPOTENCY_KEY_REUSED",
      field: "idempotencyKey",
      modelId: model.id,
    });
    await expectConnectError(tts.connect.recordUsage({ ...event, latencyMs: 999 }), { code: Code.AlreadyExists, reason: "IDEMPOTENCY_KEY_REUSED" });
    expect(await stats(model.id, alice.token)).toMatchObject({ usageCount: 1, totalCost: 1 });
  });

  test("the same key on two models is two events (keys are per model)", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const [m1, m2] = [await createModel(alice), await createModel(alice)];
    await tts.grpc.recordUsage(usageInput(m1.id, alice.userId, { idempotencyKey: "shared-key" }));
    await tts.grpc.recordUsage(usageInput(m2.id, alice.userId, { idempotencyKey: "shared-key" }));
    expect((await stats(m1.id, alice.token)).usageCount).toBe(1);
    expect((await stats(m2.id, alice.token)).usageCount).toBe(1);
  });

  test("only the service role records usage", async () => {
    const alice = await server().actor();
    const admin = await server().adminActor();
    const model = await createModel(alice);
    for (const caller of [alice, admin]) {
      await expectGrpcError(caller.grpc.recordUsage(usageInput(model.id, alice.userId)), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    }
    await expectGrpcError(server().grpc().recordUsage(usageInput(model.id, alice.userId)), { code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
  });

  test("usage of a deleted or unknown model is NOT_FOUND; a user who may not use it is refused", async () => {
    const alice = await server().actor();
    const bob = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const gone = await createModel(alice);
    await alice.grpc.deleteVoiceModel({ modelId: gone.id });
    await expectGrpcError(tts.grpc.recordUsage(usageInput(gone.id, alice.userId)), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: gone.id });
    const unknown = "00000000-0000-4000-8000-000000000000";
    await expectGrpcError(tts.grpc.recordUsage(usageInput(unknown, alice.userId)), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: unknown });
    await expectGrpcError(tts.grpc.recordUsage(usageInput(model.id, bob.userId)), {
      code: Code.PermissionDenied,
      reason: "ACCESS_DENIED",
      field: "userId",
      modelId: model.id,
    });
  });

  test.each([
    ["modelId", { modelId: "nope" }],
    ["userId", { userId: "" }],
    ["userId", { userId: "has space" }],
    ["idempotencyKey", { idempotencyKey: "" }],
    ["idempotencyKey", { idempotencyKey: "x".repeat(129) }],
    ["characters", { characters: undefined, audioSeconds: undefined }],
    ["characters", { characters: -1n }],
    ["audioSeconds", { audioSeconds: -0.5 }],
    ["latencyMs", { latencyMs: -1 }],
    ["latencyMs", { latencyMs: 3_600_001 }],
    ["cost", { cost: -0.01 }],
    ["cost", { cost: Number.NaN }],
    ["qualityRating", { qualityRating: 0 }],
    ["qualityRating", { qualityRating: 6 }],
    ["usedAt", { usedAt: at("2099-01-01T00:00:00Z") }],
    ["usedAt", { usedAt: at("1999-12-31T00:00:00Z") }],
  ])("bad %s is INVALID_ARGUMENT naming it", async (field, overrides) => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    await expectGrpcError(tts.grpc.recordUsage(usageInput(model.id, alice.userId, overrides as object)), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field,
    });
    expect((await stats(model.id, alice.token)).usageCount).toBe(0);
  });
});

describe("RecordUsageBatch", () => {
  test("records up to 1,000 events in one call", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const [m1, m2] = [await createModel(alice), await createModel(alice)];
    const events = Array.from({ length: 1000 }, (_, i) => usageInput(i % 2 ? m1.id : m2.id, alice.userId, { latencyMs: i, cost: 0.001 }));
    const reply = await tts.grpc.recordUsageBatch({ events });
    expect(reply.message).toMatchObject({ recorded: 1000, duplicates: 0 });
    expect(await stats(m1.id, alice.token)).toMatchObject({ usageCount: 500, totalCost: 0.5 });
    // The whole batch again: all duplicates.
    expect((await tts.grpc.recordUsageBatch({ events })).message).toMatchObject({ recorded: 0, duplicates: 1000 });
    expect((await stats(m2.id, alice.token)).usageCount).toBe(500);
  });

  test("more than 1,000 events or none is INVALID_ARGUMENT", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const events = Array.from({ length: 1001 }, () => usageInput(model.id, alice.userId));
    await expectGrpcError(tts.grpc.recordUsageBatch({ events }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "events" });
    await expectGrpcError(tts.grpc.recordUsageBatch({ events: [] }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "events" });
  });

  test("a batch is all-or-nothing: one bad event (named by index) records none", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const good = Array.from({ length: 5 }, () => usageInput(model.id, alice.userId));
    const bad = [...good.slice(0, 3), usageInput(model.id, alice.userId, { qualityRating: 9 }), ...good.slice(3)];
    await expectGrpcError(tts.grpc.recordUsageBatch({ events: bad }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "events[3].qualityRating" });
    expect((await stats(model.id, alice.token)).usageCount).toBe(0);

    // A reused key with another payload fails the whole batch too, after the database saw it.
    await tts.grpc.recordUsage(good[0]);
    const conflicting = [...good.slice(1), { ...good[0], cost: 9 }];
    await expectGrpcError(tts.grpc.recordUsageBatch({ events: conflicting }), {
      code: Code.AlreadyExists,
      reason: "IDEMPOTENCY_KEY_REUSED",
      field: "events[4].idempotencyKey",
    });
    expect((await stats(model.id, alice.token)).usageCount).toBe(1);

    // The same key twice in one batch with different payloads is refused; with the same, counted once.
    const twice = usageInput(model.id, alice.userId);
    await expectGrpcError(tts.grpc.recordUsageBatch({ events: [twice, { ...twice, cost: 5 }] }), { code: Code.AlreadyExists, reason: "IDEMPOTENCY_KEY_REUSED", field: "events[1].idempotencyKey" });
    expect((await tts.grpc.recordUsageBatch({ events: [twice, twice] })).message).toMatchObject({ recorded: 1, duplicates: 1 });
    expect((await stats(model.id, alice.token)).usageCount).toBe(2);
  });

  test("concurrent retries of one batch count each event once", async () => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice);
    const events = Array.from({ length: 50 }, (_, i) => usageInput(model.id, alice.userId, { latencyMs: 100 + i }));
    const replies = await Promise.all(Array.from({ length: 6 }, () => tts.grpc.recordUsageBatch({ events })));
    expect(replies.reduce((n, r) => n + r.message.recorded, 0)).toBe(50);
    expect((await stats(model.id, alice.token)).usageCount).toBe(50);
  });
});
