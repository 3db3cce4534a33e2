// What the web console needs beyond the older contract: a model's daily usage in one call, its
// file's size and checksum on GetVoiceModel, an owner's list of shares, and fleet figures.
import { Code } from "@connectrpc/connect";
import { createHash } from "node:crypto";
import { createModel, useTestServer, type Actor } from "./helpers/harness";
import { expectRpcError } from "./helpers/expect-error";
import { at, usageInput } from "./usage/helpers";

const server = useTestServer();
let service: Actor;
let admin: Actor;

beforeAll(async () => {
  service = await server().serviceActor();
  admin = await server().adminActor();
});

const day = (offset: number) => new Date(Date.now() + offset * 86_400_000).toISOString().slice(0, 10);

describe("GetVoiceModelUsageSeries", () => {
  test("every day of the range from the roll-ups, zeros filled in", async () => {
    const alice = await server().actor();
    const model = await createModel(service, { userId: alice.userId, status: "completed" });
    await service.grpc.recordUsageBatch({
      events: [
        usageInput(model.id, alice.userId, { latencyMs: 100, cost: 0.5, usedAt: at(`${day(-2)}T10:00:00Z`) }),
        usageInput(model.id, alice.userId, { latencyMs: 300, cost: 0.25, usedAt: at(`${day(-2)}T11:00:00Z`) }),
        usageInput(model.id, alice.userId, { latencyMs: 50, cost: 1, usedAt: at(`${day(0)}T00:00:01Z`) }),
      ],
    });
    const { message } = await alice.grpc.getVoiceModelUsageSeries({ modelId: model.id });
    expect(message.modelId).toBe(model.id);
    expect(message.days).toHaveLength(30);
    expect(message.days[0].day).toBe(day(-29));
    expect(message.days[29]).toMatchObject({ day: day(0), usageCount: 1, totalCost: 1, averageLatency: 50 });
    expect(message.days[27]).toMatchObject({ day: day(-2), usageCount: 2, totalCost: 0.75, averageLatency: 200 });
    expect(message.days.filter((d) => d.usageCount === 0)).toHaveLength(28);

    const ranged = await alice.grpc.getVoiceModelUsageSeries({ modelId: model.id, startDay: day(-3), endDay: day(-2) });
    expect(ranged.message.days.map((d) => [d.day, d.usageCount])).toEqual([
      [day(-3), 0],
      [day(-2), 2],
    ]);
  });

  test.each([
    [{ startDay: "2026-13-01" }, "startDay"],
    [{ endDay: "yesterday" }, "endDay"],
    [{ startDay: "2025-01-02", endDay: "2025-01-01" }, "startDay"],
    [{ startDay: "2024-01-01", endDay: "2025-01-02" }, "startDay"],
  ])("%j: INVALID_ARGUMENT naming %s", async (range, field) => {
    const alice = await server().actor();
    const model = await createModel(service, { userId: alice.userId });
    const outcome = await server().call("connect", "getVoiceModelUsageSeries", { modelId: model.id, ...range }, alice.token);
    expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field });
  });
});

describe("VoiceModel.file on GetVoiceModel", () => {
  test("size and SHA-256 of the stored file, without a file.read audit event; lists leave it unset", async () => {
    const alice = await server().actor();
    const model = await createModel(service, { userId: alice.userId, status: "completed" });
    expect((await alice.grpc.getVoiceModel({ modelId: model.id })).message.model!.file).toBeUndefined();
    const bytes = Buffer.alloc(70_000, 3);
    const sha256 = createHash("sha256").update(bytes).digest("hex");
    const put = await fetch(`${server().baseUrl}/v1/voice-models/${model.id}/file`, {
      method: "PUT",
      headers: { authorization: `Bearer ${alice.token}`, "content-type": "application/octet-stream", "x-content-sha256": sha256 },
      body: bytes,
    });
    expect(put.status).toBe(200);
    for (const transport of ["grpc", "connect"] as const) {
      const got = await server().call(transport, "getVoiceModel", { modelId: model.id }, alice.token);
      expect((got.message as { model: { file: unknown } }).model.file).toMatchObject({ sizeBytes: 70_000n, sha256 });
    }
    const listed = await alice.grpc.listVoiceModels({});
    expect(listed.message.models.find((m) => m.id === model.id)!.file).toBeUndefined();
    const audit = await admin.grpc.listAuditEvents({ userId: alice.userId, action: "file.read", limit: 10 });
    expect(audit.message.events).toEqual([]);
  });
});

describe("ListModelShares", () => {
  test("an owner's shares, newest first, paged; a model filter; the sharee sees none of them as its own", async () => {
    const alice = await server().actor();
    const bob = await server().actor();
    const a = await createModel(service, { userId: alice.userId, status: "completed" });
    const b = await createModel(service, { userId: alice.userId, status: "completed" });
    await alice.grpc.shareVoiceModel({ modelId: a.id, targetUserIds: [bob.userId, "carol-1"], permissions: ["view"] });
    await alice.grpc.shareVoiceModel({ modelId: b.id, targetUserIds: [bob.userId], permissions: ["use"] });
    const all = (await alice.grpc.listModelShares({})).message;
    expect(all.shares.map((s) => [s.modelId, s.targetUserId, s.permission]).sort()).toEqual(
      [
        [a.id, bob.userId, "view"],
        [a.id, "carol-1", "view"],
        [b.id, bob.userId, "use"],
      ].sort(),
    );
    expect(all.shares[0].modelId).toBe(b.id); // newest first
    expect(all.nextPageToken).toBe("");

    const seen = [];
    let pageToken: string | undefined;
    do {
      const page = (await alice.grpc.listModelShares({ limit: 2, pageToken })).message;
      seen.push(...page.shares.map((s) => `${s.modelId}:${s.targetUserId}`));
      pageToken = page.nextPageToken || undefined;
    } while (pageToken);
    expect(seen.sort()).toEqual(all.shares.map((s) => `${s.modelId}:${s.targetUserId}`).sort());

    const onlyA = (await alice.grpc.listModelShares({ modelId: a.id })).message;
    expect(onlyA.shares.map((s) => s.targetUserId).sort()).toEqual([bob.userId, "carol-1"].sort());
    expect((await bob.grpc.listModelShares({})).message.shares).toEqual([]);
    expect((await admin.grpc.listModelShares({ userId: alice.userId })).message.shares).toHaveLength(3);
    // A deleted model's shares end with it.
    await alice.grpc.deleteVoiceModel({ modelId: b.id });
    expect((await alice.grpc.listModelShares({})).message.shares.map((s) => s.modelId)).toEqual([a.id, a.id]);
  });

  test("a bad model id: INVALID_ARGUMENT naming modelId", async () => {
    const alice = await server().actor();
    expectRpcError(await server().call("connect", "listModelShares", { modelId: "nope" }, alice.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "modelId" });
  });
});

describe("GetFleetAnalytics", () => {
  test("admin: fleet figures that grow with a new user's models and usage; a user and the service are refused", async () => {
    const before = (await admin.grpc.getFleetAnalytics({})).message;
    const alice = await server().actor();
    const m = await createModel(service, { userId: alice.userId, status: "completed", provider: "openai-tts" });
    await createModel(service, { userId: alice.userId, status: "pending" });
    await service.grpc.recordUsage(usageInput(m.id, alice.userId, { cost: 2 }));
    const after = (await admin.grpc.getFleetAnalytics({})).message;
    expect(after.totalUsers).toBe(before.totalUsers + 1);
    expect(after.totalModels).toBe(before.totalModels + 2);
    expect(after.activeModels).toBe(before.activeModels + 1);
    expect(after.modelsByProvider["openai-tts"] ?? 0).toBe((before.modelsByProvider["openai-tts"] ?? 0) + 1);
    expect(after.modelsByStatus.pending ?? 0).toBe((before.modelsByStatus.pending ?? 0) + 1);
    expect(after.totalUsageCount).toBe(before.totalUsageCount + 1n);
    expect(after.totalCost).toBeCloseTo(before.totalCost + 2, 6);
    for (const token of [alice.token, service.token]) {
      expectRpcError(await server().call("connect", "getFleetAnalytics", {}, token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    }
  });
});
