import { Code } from "@connectrpc/connect";
import { expectRpcError } from "../helpers/expect-error";
import { createModel, startTestServer, TRANSPORTS, uniqueUser, useTestServer, type Actor } from "../helpers/harness";

const server = useTestServer();

describe("sharing", () => {
  let owner: Actor;
  let viewer: Actor;
  let user: Actor;
  let stranger: Actor;
  let modelId: string;

  beforeAll(async () => {
    [owner, viewer, user, stranger] = await Promise.all([server().actor(), server().actor(), server().actor(), server().actor()]);
    modelId = (await createModel(owner, { qualityScore: 0.6 })).id;
    const { message } = await owner.grpc.shareVoiceModel({ modelId, targetUserIds: [viewer.userId], permissions: ["view"] });
    expect(message.shares).toMatchObject([{ modelId, ownerId: owner.userId, targetUserId: viewer.userId, permission: "view" }]);
    await owner.grpc.shareVoiceModel({ modelId, targetUserIds: [user.userId], permissions: ["view", "use"] });
  });

  const call = (t: (typeof TRANSPORTS)[number], who: () => Actor, method: Parameters<ReturnType<typeof server>["call"]>[1], req: object) =>
    server().call(t, method, req, who().token);

  describe.each(TRANSPORTS)("over %s", (t) => {
    test("view and use may read; a stranger may not", async () => {
      expect((await call(t, () => viewer, "getVoiceModel", { modelId })).code).toBe(0);
      expect((await call(t, () => user, "getVoiceModel", { modelId })).code).toBe(0);
      expectRpcError(await call(t, () => stranger, "getVoiceModel", { modelId }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    });

    test("only use reaches usage stats and compare", async () => {
      const other = (await createModel(owner, { qualityScore: 0.3 })).id;
      await owner.grpc.shareVoiceModel({ modelId: other, targetUserIds: [user.userId, viewer.userId], permissions: ["use"] });
      await owner.grpc.shareVoiceModel({ modelId: other, targetUserIds: [viewer.userId], permissions: ["view"] });
      expect((await call(t, () => user, "getVoiceModelUsageStats", { modelId })).code).toBe(0);
      expect((await call(t, () => user, "compareVoiceModels", { modelIds: [modelId, other] })).code).toBe(0);
      expectRpcError(await call(t, () => viewer, "getVoiceModelUsageStats", { modelId }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
      expectRpcError(await call(t, () => viewer, "compareVoiceModels", { modelIds: [modelId, other] }), {
        code: Code.PermissionDenied,
        reason: "ACCESS_DENIED",
      });
      expectRpcError(await call(t, () => stranger, "getVoiceModelUsageStats", { modelId }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    });

    test("update, activate, deactivate, delete, share and revoke stay with the owner", async () => {
      for (const who of [viewer, user, stranger]) {
        const denied = { code: Code.PermissionDenied, reason: "ACCESS_DENIED" };
        expectRpcError(await call(t, () => who, "updateVoiceModel", { modelId, qualityScore: 0.1 }), denied);
        expectRpcError(await call(t, () => who, "activateVoiceModel", { modelId }), denied);
        expectRpcError(await call(t, () => who, "deactivateVoiceModel", { modelId }), denied);
        expectRpcError(await call(t, () => who, "deleteVoiceModel", { modelId }), denied);
        expectRpcError(await call(t, () => who, "shareVoiceModel", { modelId, targetUserIds: ["someone-else"], permissions: ["view"] }), denied);
        expectRpcError(await call(t, () => who, "shareVoiceModel", { ownerId: owner.userId, modelId, targetUserIds: ["x1"], permissions: ["view"] }), denied);
        expectRpcError(await call(t, () => who, "revokeShare", { modelId, targetUserIds: [viewer.userId] }), denied);
      }
      expect((await owner.grpc.getVoiceModel({ modelId })).message.model!.qualityScore).toBe(0.6);
    });
  });

  test("ListSharedVoiceModels names who shared it and how", async () => {
    const { message } = await user.grpc.listSharedVoiceModels({});
    const entry = message.sharedModels.find((m) => m.model!.id === modelId)!;
    expect(entry).toMatchObject({ sharedBy: owner.userId, permission: "use" });
    expect((await stranger.grpc.listSharedVoiceModels({})).message.sharedModels).toEqual([]);
    const json = await server().rpcJson("ListSharedVoiceModels", {}, viewer.token);
    expect(json.status).toBe(200);
    expect((json.body as any).sharedModels.map((m: any) => [m.model.id, m.permission, m.sharedBy])).toContainEqual([modelId, "view", owner.userId]);
    // A user may not list another user's shared models.
    expectRpcError(await server().call("grpc", "listSharedVoiceModels", { userId: user.userId }, viewer.token), {
      code: Code.PermissionDenied,
      reason: "ACCESS_DENIED",
    });
  });

  test("ListSharedVoiceModels pages", async () => {
    const sharer = await server().actor();
    const target = await server().actor();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = (await createModel(sharer)).id;
      ids.push(id);
      await sharer.grpc.shareVoiceModel({ modelId: id, targetUserIds: [target.userId], permissions: ["view"] });
    }
    const seen: string[] = [];
    let pageToken = "";
    do {
      const { message } = await target.grpc.listSharedVoiceModels({ limit: 2, pageToken });
      seen.push(...message.sharedModels.map((m) => m.model!.id));
      pageToken = message.nextPageToken;
    } while (pageToken);
    expect(seen.sort()).toEqual(ids.sort());
  });

  test("after revoke the user loses access", async () => {
    const m = (await createModel(owner)).id;
    const revokee = await server().actor();
    await owner.grpc.shareVoiceModel({ modelId: m, targetUserIds: [revokee.userId], permissions: ["use"] });
    expect((await server().call("grpc", "getVoiceModel", { modelId: m }, revokee.token)).code).toBe(0);
    const { message } = await owner.grpc.revokeShare({ modelId: m, targetUserIds: [revokee.userId] });
    expect(message.revokedCount).toBe(1);
    expectRpcError(await server().call("grpc", "getVoiceModel", { modelId: m }, revokee.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    expectRpcError(await server().call("connect", "getVoiceModelUsageStats", { modelId: m }, revokee.token), {
      code: Code.PermissionDenied,
      reason: "ACCESS_DENIED",
    });
    expect((await revokee.grpc.listSharedVoiceModels({})).message.sharedModels).toEqual([]);
  });

  test("deleting a model ends its shares", async () => {
    const m = (await createModel(owner)).id;
    const target = await server().actor();
    await owner.grpc.shareVoiceModel({ modelId: m, targetUserIds: [target.userId], permissions: ["use"] });
    await owner.grpc.deleteVoiceModel({ modelId: m });
    expect((await target.grpc.listSharedVoiceModels({})).message.sharedModels).toEqual([]);
    const rows = await server().db.knex("model_shares").where("model_id", m);
    expect(rows).toEqual([]);
    expect((await server().call("grpc", "getVoiceModel", { modelId: m }, target.token)).code).not.toBe(0);
    // Sharing a deleted model is NOT_FOUND.
    expectRpcError(await server().call("grpc", "shareVoiceModel", { modelId: m, targetUserIds: [target.userId], permissions: ["view"] }, owner.token), {
      code: Code.NotFound,
      reason: "VOICE_MODEL_NOT_FOUND",
    });
  });

  test.each(TRANSPORTS)("bad share requests are INVALID_ARGUMENT and change nothing (%s)", async (t) => {
    const m = (await createModel(owner)).id;
    const bad = (req: object, field: string) =>
      server().call(t, "shareVoiceModel", { modelId: m, ...req }, owner.token).then((r) => expectRpcError(r, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field }));
    await bad({ targetUserIds: [owner.userId], permissions: ["view"] }, "targetUserIds");
    await bad({ targetUserIds: [], permissions: ["view"] }, "targetUserIds");
    await bad({ targetUserIds: Array.from({ length: 101 }, (_, i) => `u${i}`), permissions: ["view"] }, "targetUserIds");
    await bad({ targetUserIds: ["bad user!"], permissions: ["view"] }, "targetUserIds");
    await bad({ targetUserIds: ["ok-user"], permissions: [] }, "permissions");
    await bad({ targetUserIds: ["ok-user"], permissions: ["edit"] }, "permissions");
    expect(await server().db.knex("model_shares").where("model_id", m)).toEqual([]);
    // 100 is allowed.
    const ok = await server().call(t, "shareVoiceModel", { modelId: m, targetUserIds: Array.from({ length: 100 }, (_, i) => `u${i}`), permissions: ["view"] }, owner.token);
    expect(ok.code).toBe(0);
    expect(ok.message.shares).toHaveLength(100);
  });

  test("service and admin share for an owner", async () => {
    const svc = await server().serviceActor();
    const m = (await createModel(owner)).id;
    const target = uniqueUser();
    await svc.grpc.shareVoiceModel({ ownerId: owner.userId, modelId: m, targetUserIds: [target], permissions: ["view"] });
    expectRpcError(await server().call("grpc", "shareVoiceModel", { modelId: m, targetUserIds: [target], permissions: ["view"] }, svc.token), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "ownerId",
    });
  });
});

test("sharing switched off by config", async () => {
  // A share made while sharing was on stops granting access once it is switched off.
  const owner0 = await server().actor();
  const reader = await server().actor();
  const shared = (await createModel(owner0)).id;
  await owner0.grpc.shareVoiceModel({ modelId: shared, targetUserIds: [reader.userId], permissions: ["view"] });
  expect((await server().call("grpc", "getVoiceModel", { modelId: shared }, reader.token)).code).toBe(0);
  const off = await startTestServer({ env: { SHARING_ENABLED: "false" }, database: server().db });
  try {
    for (const t of TRANSPORTS) {
      expectRpcError(await off.call(t, "getVoiceModel", { modelId: shared }, reader.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    }
    const owner = await off.actor();
    const m = (await createModel(owner)).id;
    for (const t of TRANSPORTS) {
      expectRpcError(await off.call(t, "shareVoiceModel", { modelId: m, targetUserIds: ["someone"], permissions: ["view"] }, owner.token), {
        code: Code.FailedPrecondition,
        reason: "SHARING_DISABLED",
      });
      expectRpcError(await off.call(t, "listSharedVoiceModels", {}, owner.token), { code: Code.FailedPrecondition, reason: "SHARING_DISABLED" });
    }
  } finally {
    await off.close();
  }
});
