// The shared security suite: every RPC of VoiceModelService, over both transports, refuses
// callers without a valid token, and every RPC that touches a user's data refuses other users.
import { create } from "@bufbuild/protobuf";
import { anyUnpack, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import type { Status } from "../gen/google/rpc/status_pb";
import type { VoiceModel } from "../gen/voicemodel/v1/voice_model_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { EventWatch } from "./helpers/event-watch";
import { expectErrorInfo, expectRpcError } from "./helpers/expect-error";
import { grpcStreamingClient } from "./helpers/streaming-client";

import { createModel, modelInput, sleep, startTestServer, TRANSPORTS, uniqueUser, useTestServer, type Actor, type MethodName } from "./helpers/harness";
import { badlySignedToken, expiredToken, mintToken } from "./helpers/tokens";

const server = useTestServer();

interface Ctx {
  /** The caller (role user). */
  me: Actor;
  /** Another user, whose data the caller must not reach. */
  other: Actor;
  otherModel: VoiceModel;
  /** A fresh completed, inactive model of the caller. */
  myModel(): Promise<VoiceModel>;
}

interface CrossUser {
  request: object;
  field?: string;
  modelId?: string;
}

interface SecuritySpec {
  /** A valid request on the caller's own data (it must succeed with the caller's token). */
  own(ctx: Ctx): Promise<object>;
  /** Requests naming another user's data: each is PERMISSION_DENIED / ACCESS_DENIED. */
  crossUser(ctx: Ctx): Promise<CrossUser[]>;
  /** A request that service and admin callers must not send without userId. */
  withoutUserId?: object;
  /** A request the user role may not make. */
  userRoleRefused?(ctx: Ctx): Promise<CrossUser>;
  /** Service and admin only: the user's own request is PERMISSION_DENIED (and changes nothing). */
  privilegedOnly?: boolean;
  /**
   * Batch calls: requests whose items name another user's data, or make a change the user role
   * may not. The call succeeds; exactly the listed items come back PERMISSION_DENIED /
   * ACCESS_DENIED in their results, and the other user's data does not change.
   */
  perItem?(ctx: Ctx): Promise<PerItem[]>;
  /** A stream that runs until the client leaves: the own request must open (its first message comes). */
  endless?: boolean;
}

interface PerItem {
  request: object;
  refused: Array<{ index: number; field?: string; modelId?: string }>;
}

/** Upload messages (header + one chunk) for a model. */
const uploadRequests = (modelId: string) => [
  { part: { case: "header", value: { modelId } } },
  { part: { case: "chunk", value: new Uint8Array([1, 2, 3, 4]) } },
];

/** A minimal valid export header (for import requests refused before any byte is read). */
const importHeader = { formatVersion: 1, model: { provider: "xtts-v2", sampleRate: 22050 }, sizeBytes: 0n, sha256: "0".repeat(64) };

/** A fresh model of the caller with a file. */
async function myModelWithFile(ctx: Ctx): Promise<string> {
  const model = await ctx.myModel();
  const uploaded = await server().call("grpc", "uploadModelFile", uploadRequests(model.id), ctx.me.token);
  if (uploaded.code !== 0) throw new Error(`upload failed: ${uploaded.errorMessage}`);
  return model.id;
}

const byId = (modelId: string) => ({ modelId });

/** One chunk of a chunked upload and what its Start declares. */
const CHUNK = new Uint8Array([1, 2, 3, 4]);
const chunkDeclaration = { sizeBytes: 4n, sha256: "9f64a747e1b97f131fabb6b447296c9b6f0201e79fb3c5356e6c77e89b6a806a" };

/** A fresh upload session of the caller, on a fresh model. */
async function myUploadSession(ctx: Ctx): Promise<string> {
  const started = await server().call("grpc", "startModelFileUpload", { modelId: (await ctx.myModel()).id, ...chunkDeclaration }, ctx.me.token);
  if (started.code !== 0) throw new Error(`start failed: ${started.errorMessage}`);
  return started.message.uploadId;
}

/** A backup of the user's models, made by an admin. */
async function backupOf(userId: string): Promise<string> {
  const made = await server().call("grpc", "createBackup", { userId }, admin.token);
  const messages = made.message as Array<{ backup?: { backupId: string } }>;
  return messages[messages.length - 1].backup!.backupId;
}

/** A valid RecordConsent request for a model or a training job. */
const consentRequest = (target: { modelId?: string; trainingJobId?: string; userId?: string }) => ({
  ...target,
  speaker: { kind: "owner" },
  statementText: "I agree to my voice being cloned",
  statementVersion: "v1",
  captureMethod: "in_app_recording",
});

let jobs = 0;
/** A fresh consent record of the actor, for a training job (no model changes). */
async function consentOf(actor: Actor): Promise<string> {
  const { message } = await actor.grpc.recordConsent(consentRequest({ trainingJobId: `sec-job-${++jobs}-${actor.userId}` }));
  return message.consent!.id;
}

/** The other user's consent record, made once. */
let otherConsentId: Promise<string> | undefined;
const otherConsent = (ctx: Ctx) => (otherConsentId ??= consentOf(ctx.other));
const uploadRecording = (consentId: string) => [
  { part: { case: "header", value: { consentId } } },
  { part: { case: "chunk", value: new Uint8Array([9, 8, 7]) } },
];
const usageRequest = (modelId: string, userId: string) => ({ modelId, userId, characters: 10n, latencyMs: 5, cost: 0, idempotencyKey: `sec-${modelId}` });

/** One entry per RPC that touches user data; an RPC the server serves without one fails below. */
const SPECS: Record<MethodName, SecuritySpec> = {
  createVoiceModel: {
    own: async () => ({ provider: "xtts-v2", modelPath: "own.pth" }),
    crossUser: async ({ other }) => [{ request: { userId: other.userId, provider: "xtts-v2", modelPath: "x" }, field: "userId" }],
    withoutUserId: { provider: "xtts-v2", modelPath: "x" },
  },
  getVoiceModel: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  listVoiceModels: {
    own: async () => ({}),
    crossUser: async ({ other }) => [
      { request: { userId: other.userId }, field: "userId" },
      { request: { userId: other.userId, showDeleted: true, isActive: true }, field: "userId" },
    ],
    withoutUserId: {},
  },
  getVoiceModelLineage: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  updateVoiceModel: {
    own: async ({ myModel }) => ({ modelId: (await myModel()).id, qualityScore: 0.5 }),
    crossUser: async ({ otherModel }) => [
      { request: { modelId: otherModel.id, qualityScore: 0.1 }, modelId: otherModel.id },
      { request: { modelId: otherModel.id, metadata: { pwned: true }, updateMask: create(FieldMaskSchema, { paths: ["metadata"] }) }, modelId: otherModel.id },
    ],
    userRoleRefused: async ({ myModel }) => {
      const model = await myModel();
      return { request: { modelId: model.id, status: "failed" }, field: "status" };
    },
  },
  deleteVoiceModel: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  batchGetVoiceModels: {
    own: async ({ myModel }) => ({ modelIds: [(await myModel()).id] }),
    crossUser: async () => [],
    perItem: async ({ myModel, otherModel }) => [
      { request: { modelIds: [(await myModel()).id, otherModel.id] }, refused: [{ index: 1, modelId: otherModel.id }] },
      { request: { modelIds: [otherModel.id, otherModel.id] }, refused: [{ index: 0, modelId: otherModel.id }, { index: 1, modelId: otherModel.id }] },
    ],
  },
  batchUpdateVoiceModels: {
    own: async ({ myModel }) => ({ items: [{ modelId: (await myModel()).id, qualityScore: 0.5 }] }),
    // all_or_nothing: the refused item fails the whole call.
    crossUser: async ({ myModel, otherModel }) => [
      { request: { allOrNothing: true, items: [{ modelId: (await myModel()).id, qualityScore: 0.3 }, { modelId: otherModel.id, qualityScore: 0.1 }] }, modelId: otherModel.id },
    ],
    perItem: async ({ myModel, otherModel }) => {
      const mine = await myModel();
      return [
        {
          request: {
            items: [
              { modelId: otherModel.id, metadata: { pwned: true }, updateMask: create(FieldMaskSchema, { paths: ["metadata"] }) },
              { modelId: mine.id, qualityScore: 0.3 },
              { modelId: mine.id, status: "failed" },
            ],
          },
          refused: [
            { index: 0, modelId: otherModel.id },
            { index: 2, field: "status" },
          ],
        },
      ];
    },
  },
  batchDeleteVoiceModels: {
    own: async ({ myModel }) => ({ modelIds: [(await myModel()).id] }),
    crossUser: async ({ myModel, otherModel }) => [{ request: { allOrNothing: true, modelIds: [(await myModel()).id, otherModel.id] }, modelId: otherModel.id }],
    perItem: async ({ myModel, otherModel }) => [
      { request: { modelIds: [otherModel.id, (await myModel()).id] }, refused: [{ index: 0, modelId: otherModel.id }] },
    ],
  },
  activateVoiceModel: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  deactivateVoiceModel: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  getActiveVoiceModel: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  // WhoAmI reads no stored data: only the token checks apply.
  whoAmI: { own: async () => ({}), crossUser: async () => [] },
  // Model files, backups, deletion. Streaming RPCs take/return message lists here.
  uploadModelFile: {
    own: async ({ myModel }) => uploadRequests((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: uploadRequests(otherModel.id), modelId: otherModel.id }],
  },
  // The chunked upload: another caller's upload id is NOT_FOUND (UPLOAD_NOT_FOUND), not
  // PERMISSION_DENIED, so Append and Finish have no cross-user request here
  // (model-files/chunked-upload.test.ts checks them); Start is refused on another user's model.
  startModelFileUpload: {
    own: async ({ myModel }) => ({ modelId: (await myModel()).id, ...chunkDeclaration }),
    crossUser: async ({ otherModel }) => [{ request: { modelId: otherModel.id, ...chunkDeclaration }, modelId: otherModel.id }],
  },
  appendModelFileUpload: {
    own: async (ctx) => ({ uploadId: await myUploadSession(ctx), offset: 0n, data: CHUNK }),
    crossUser: async () => [],
  },
  finishModelFileUpload: {
    own: async (ctx) => {
      const uploadId = await myUploadSession(ctx);
      await server().call("grpc", "appendModelFileUpload", { uploadId, offset: 0n, data: CHUNK }, ctx.me.token);
      return { uploadId };
    },
    crossUser: async () => [],
  },
  readModelFile: {
    own: async (ctx) => byId(await myModelWithFile(ctx)),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  exportVoiceModel: {
    own: async (ctx) => byId(await myModelWithFile(ctx)),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  importVoiceModel: {
    own: async (ctx) => {
      const exported = await server().call("grpc", "exportVoiceModel", byId(await myModelWithFile(ctx)), ctx.me.token);
      return (exported.message as Array<{ part: unknown }>).map((m) => ({ part: m.part }));
    },
    crossUser: async ({ other }) => [{ request: [{ userId: other.userId, part: { case: "header", value: importHeader } }], field: "userId" }],
    withoutUserId: [{ part: { case: "header", value: importHeader } }],
  },
  undeleteVoiceModel: {
    own: async ({ me, myModel }) => {
      const model = await myModel();
      await me.grpc.deleteVoiceModel(byId(model.id));
      return byId(model.id);
    },
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  createBackup: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  listBackups: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  readBackup: {
    own: async ({ me }) => ({ backupId: await backupOf(me.userId) }),
    crossUser: async ({ other }) => [{ request: { backupId: await backupOf(other.userId) } }],
  },
  restoreBackup: {
    own: async ({ me }) => {
      const made = await server().call("grpc", "createBackup", { userId: me.userId }, admin.token);
      const messages = made.message as Array<{ backup?: { backupPath: string } }>;
      return { backupPath: messages[messages.length - 1].backup!.backupPath };
    },
    crossUser: async ({ other }) => [
      { request: { userId: other.userId, backupPath: `backups/${other.userId}/x.vmb` }, field: "userId" },
      { request: { backupPath: `backups/${other.userId}/x.vmb` }, field: "backupPath" },
    ],
    withoutUserId: { backupPath: "backups/someone/x.vmb" },
  },
  listActivationHistory: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  rollbackActiveModel: {
    // A change to roll back first: a fresh model made active.
    own: async ({ me, myModel }) => {
      await me.grpc.activateVoiceModel(byId((await myModel()).id));
      return {};
    },
    crossUser: async ({ other }) => [
      { request: { userId: other.userId }, field: "userId" },
      { request: { userId: other.userId, expectedActiveModelId: "" }, field: "userId" },
    ],
    withoutUserId: {},
  },
  deleteUserData: {
    privilegedOnly: true,
    own: async ({ me }) => ({ userId: me.userId }),
    crossUser: async () => [],
  },
  watchVoiceModelEvents: {
    endless: true,
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
  },
  // Consent records: the owner and admins read them; the owner, service and admins write them.
  recordConsent: {
    own: async ({ myModel }) => consentRequest({ modelId: (await myModel()).id }),
    crossUser: async ({ other, otherModel }) => [
      { request: consentRequest({ userId: other.userId, trainingJobId: "x" }), field: "userId" },
      { request: consentRequest({ modelId: otherModel.id }), modelId: otherModel.id },
    ],
    withoutUserId: consentRequest({ trainingJobId: "x" }),
  },
  getConsent: {
    own: async ({ me }) => ({ consentId: await consentOf(me) }),
    crossUser: async (ctx) => [{ request: { consentId: await otherConsent(ctx) }, field: "consentId" }],
  },
  listConsents: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  revokeConsent: {
    own: async ({ me }) => ({ consentId: await consentOf(me) }),
    crossUser: async (ctx) => [{ request: { consentId: await otherConsent(ctx) }, field: "consentId" }],
  },
  uploadConsentRecording: {
    own: async ({ me }) => uploadRecording(await consentOf(me)),
    crossUser: async (ctx) => [{ request: uploadRecording(await otherConsent(ctx)), field: "consentId" }],
  },
  readConsentRecording: {
    own: async ({ me }) => {
      const consentId = await consentOf(me);
      await server().call("grpc", "uploadConsentRecording", uploadRecording(consentId), me.token);
      return { consentId };
    },
    crossUser: async (ctx) => [{ request: { consentId: await otherConsent(ctx) }, field: "consentId" }],
  },
  listModelsMissingConsent: { privilegedOnly: true, own: async () => ({}), crossUser: async () => [] },
  // Sharing, cleanup, audit and alerts.
  shareVoiceModel: {
    own: async ({ myModel }) => ({ modelId: (await myModel()).id, targetUserIds: ["a-friend"], permissions: ["view"] }),
    crossUser: async ({ me, other, otherModel }) => [
      { request: { modelId: otherModel.id, targetUserIds: ["a-friend"], permissions: ["use"] }, modelId: otherModel.id },
      { request: { ownerId: other.userId, modelId: otherModel.id, targetUserIds: [me.userId], permissions: ["use"] }, field: "ownerId" },
    ],
  },
  revokeShare: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  listSharedVoiceModels: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  listModelShares: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  listExpiringModels: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  listAuditEvents: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
  },
  cleanupExpiredModels: { privilegedOnly: true, own: async () => ({ dryRun: true }), crossUser: async () => [] },
  getAlerts: { privilegedOnly: true, own: async () => ({}), crossUser: async () => [] },
  // Usage, analytics, comparison and selection. Recording usage is for the service role.
  recordUsage: { privilegedOnly: true, own: async ({ me, myModel }) => usageRequest((await myModel()).id, me.userId), crossUser: async () => [] },
  recordUsageBatch: {
    privilegedOnly: true,
    own: async ({ me, myModel }) => ({ events: [usageRequest((await myModel()).id, me.userId)] }),
    crossUser: async () => [],
  },
  getVoiceModelUsageStats: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  getVoiceModelUsageSeries: {
    own: async ({ myModel }) => byId((await myModel()).id),
    crossUser: async ({ otherModel }) => [{ request: byId(otherModel.id), modelId: otherModel.id }],
  },
  getFleetAnalytics: { privilegedOnly: true, own: async () => ({}), crossUser: async () => [] },
  getVoiceModelAnalytics: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId }, field: "userId" }],
    withoutUserId: {},
  },
  compareVoiceModels: {
    own: async ({ myModel }) => ({ modelIds: [(await myModel()).id, (await myModel()).id] }),
    crossUser: async ({ myModel, otherModel }) => [{ request: { modelIds: [(await myModel()).id, otherModel.id] }, modelId: otherModel.id }],
  },
  selectBestVoiceModel: {
    own: async () => ({}),
    crossUser: async ({ other }) => [{ request: { userId: other.userId, activate: true }, field: "userId" }],
    withoutUserId: {},
  },
};

const METHODS = VoiceModelService.methods.map((m) => ({ name: m.name, localName: m.localName as MethodName, kind: m.methodKind }));
const SPECCED = METHODS.filter((m) => SPECS[m.localName]);

/** A request for any method: the spec's own request, or an empty one (auth comes first). */
async function anyRequest(method: MethodName, ctx: Ctx): Promise<object> {
  return SPECS[method] ? SPECS[method]!.own(ctx) : {};
}

let ctx: Ctx;
let admin: Actor;

/** The other user's data as an admin sees it; a refused call must leave it as it was. */
async function otherUsersData(): Promise<unknown> {
  const { message } = await admin.grpc.listVoiceModels({ userId: ctx.other.userId, showDeleted: true, limit: 100 });
  return message.models;
}

beforeAll(async () => {
  const me = await server().actor(uniqueUser("me"));
  const other = await server().actor(uniqueUser("other"));
  admin = await server().adminActor();
  const otherModel = await createModel(other, { qualityScore: 0.6, metadata: { owner: "other" } });
  await createModel(other, { qualityScore: 0.4 });
  await createModel(me, { qualityScore: 0.9 }); // the caller's active model
  ctx = { me, other, otherModel, myModel: () => createModel(me, { qualityScore: 0.2 }) };
});

describe.each(TRANSPORTS)("over %s", (transport) => {
  const unauthenticated = { code: Code.Unauthenticated, reason: "UNAUTHENTICATED" };

  describe.each(METHODS)("$name", ({ localName }) => {
    test("no token: UNAUTHENTICATED", async () => {
      expectRpcError(await server().call(transport, localName, await anyRequest(localName, ctx)), unauthenticated);
    });

    test("badly signed token: UNAUTHENTICATED", async () => {
      const token = await badlySignedToken(ctx.me.userId);
      expectRpcError(await server().call(transport, localName, await anyRequest(localName, ctx), token), unauthenticated);
    });

    test("expired token: UNAUTHENTICATED", async () => {
      const token = await expiredToken(ctx.me.userId);
      expectRpcError(await server().call(transport, localName, await anyRequest(localName, ctx), token), unauthenticated);
    });

    test("malformed authorization: UNAUTHENTICATED", async () => {
      const request = await anyRequest(localName, ctx);
      for (const authorization of ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not.a.jwt", ctx.me.token]) {
        expectRpcError(await server().call(transport, localName, request, undefined, { authorization }), unauthenticated);
      }
    });

    test("tokens with no subject, an unknown role, or another algorithm: UNAUTHENTICATED", async () => {
      const request = await anyRequest(localName, ctx);
      const tokens = await Promise.all([
        mintToken(ctx.me.userId, { noSubject: true }),
        mintToken(ctx.me.userId, { roles: ["superuser"] }),
        mintToken(ctx.me.userId, { roles: "admin" }),
        mintToken(ctx.me.userId, { alg: "HS512" }),
      ]);
      for (const token of tokens) expectRpcError(await server().call(transport, localName, request, token), unauthenticated);
    });
  });

  describe.each(SPECCED)("$name", ({ localName }) => {
    const spec = SPECS[localName]!;

    test(spec.privilegedOnly ? "the user role is refused: PERMISSION_DENIED" : "the caller's own request succeeds", async () => {
      if (spec.endless) {
        const watch = new EventWatch(transport === "grpc" ? grpcStreamingClient(server().grpcPort, ctx.me.token) : server().connect(ctx.me.token), await spec.own(ctx));
        await watch.opened();
        await watch.cancel();
        return;
      }
      const outcome = await server().call(transport, localName, await spec.own(ctx), ctx.me.token);
      if (spec.privilegedOnly) expectRpcError(outcome, { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
      else expect({ code: outcome.code, error: outcome.errorMessage }).toEqual({ code: 0, error: undefined });
    });

    test("another user's id or model: PERMISSION_DENIED, nothing changes", async () => {
      const before = await otherUsersData();
      for (const cross of await spec.crossUser(ctx)) {
        const outcome = await server().call(transport, localName, cross.request, ctx.me.token);
        expectRpcError(outcome, { code: Code.PermissionDenied, reason: "ACCESS_DENIED", field: cross.field, modelId: cross.modelId });
      }
      expect(await otherUsersData()).toEqual(before);
    });

    if (spec.perItem) {
      test("items naming another user's data: PERMISSION_DENIED per item, nothing of theirs changes", async () => {
        const before = await otherUsersData();
        for (const { request, refused } of await spec.perItem!(ctx)) {
          const outcome = await server().call(transport, localName, request, ctx.me.token);
          expect({ code: outcome.code, error: outcome.errorMessage }).toEqual({ code: 0, error: undefined });
          const results = (outcome.message as { results: Array<{ result: { case: string; value: Status } }> }).results;
          const failed = results.flatMap(({ result }, index) => (result.case === "error" ? [index] : []));
          expect(failed).toEqual(refused.map((r) => r.index));
          for (const { index, field, modelId } of refused) {
            const status = results[index].result.value;
            expect(Code[status.code]).toBe(Code[Code.PermissionDenied]);
            const info = anyUnpack(status.details[0], ErrorInfoSchema);
            expectErrorInfo(info, { code: Code.PermissionDenied, reason: "ACCESS_DENIED", field, modelId }, outcome.requestId);
          }
        }
        expect(await otherUsersData()).toEqual(before);
      });
    }

    if (spec.userRoleRefused) {
      test("the user role may not make this change: PERMISSION_DENIED", async () => {
        const refused = await spec.userRoleRefused!(ctx);
        const modelId = (refused.request as { modelId: string }).modelId;
        const before = (await admin.grpc.getVoiceModel({ modelId })).message.model;
        const outcome = await server().call(transport, localName, refused.request, ctx.me.token);
        expectRpcError(outcome, { code: Code.PermissionDenied, reason: "ACCESS_DENIED", field: refused.field });
        expect((await admin.grpc.getVoiceModel({ modelId })).message.model).toEqual(before);
      });
    }

    if (spec.withoutUserId) {
      test.each(["service", "admin"])("a %s caller without userId: INVALID_ARGUMENT", async (role) => {
        const token = await mintToken(`${role}-caller`, { roles: [role] });
        const outcome = await server().call(transport, localName, spec.withoutUserId!, token);
        expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "userId" });
      });
    }
  });
});

test("service and admin callers reach any user's data", async () => {
  const service = await server().serviceActor();
  const { otherModel, other } = ctx;
  expect((await service.grpc.getVoiceModel({ modelId: otherModel.id })).message.model!.id).toBe(otherModel.id);
  expect((await admin.grpc.listVoiceModels({ userId: other.userId })).message.total).toBeGreaterThan(0);
  expect((await admin.grpc.getActiveVoiceModel({ userId: other.userId })).message.model).toBeDefined();
});

test("a user may name themselves explicitly", async () => {
  const { message } = await ctx.me.grpc.listVoiceModels({ userId: ctx.me.userId });
  expect(message.total).toBeGreaterThan(0);
});

test("a token's roles claim decides the role, not the request", async () => {
  const { message } = await ctx.me.grpc.whoAmI({});
  expect(message).toMatchObject({ userId: ctx.me.userId, roles: ["user"] });
  const service = await server().serviceActor();
  expect((await service.grpc.whoAmI({})).message.roles).toEqual(["service"]);
});

// A served RPC without an entry in SPECS has no cross-user coverage: add one when adding an RPC.
test("every served RPC has an entry in SPECS", () => {
  expect(METHODS.filter((m) => !SPECS[m.localName]).map((m) => m.localName)).toEqual([]);
});

describe("token checks", () => {
  test("with JWT_ISSUER and JWT_AUDIENCE set, tokens must carry both", async () => {
    const strict = await startTestServer({ database: server().db, env: { JWT_ISSUER: "https://id.example.com", JWT_AUDIENCE: "voice-models" } });
    try {
      const unauthenticated = { code: Code.Unauthenticated, reason: "UNAUTHENTICATED" };
      const good = await mintToken("iss-user", { issuer: "https://id.example.com", audience: "voice-models" });
      expect((await strict.call("grpc", "whoAmI", {}, good)).code).toBe(0);
      for (const token of [
        await mintToken("iss-user"),
        await mintToken("iss-user", { issuer: "https://evil.example.com", audience: "voice-models" }),
        await mintToken("iss-user", { issuer: "https://id.example.com", audience: "other-service" }),
      ]) {
        expectRpcError(await strict.call("grpc", "whoAmI", {}, token), unauthenticated);
        expectRpcError(await strict.call("connect", "whoAmI", {}, token), unauthenticated);
      }
    } finally {
      await strict.close();
    }
  });

  test("a token without exp, or whose sub is not a user id, is UNAUTHENTICATED saying why", async () => {
    const cases: Array<[string, Promise<string>, RegExp]> = [
      ["no exp", mintToken(uniqueUser(), { noExpiry: true }), /no exp/],
      ["long sub", mintToken("u".repeat(129)), /129 characters/],
      ["NUL in sub", mintToken("a\u0000b"), /character a user id may not have/],
      ["space in sub", mintToken("a b"), /character a user id may not have/],
      ["non-ASCII sub", mintToken("ünï"), /character a user id may not have/],
      ["lone surrogate in sub", mintToken("a\ud800"), /character a user id may not have/],
    ];
    for (const [name, minted, message] of cases) {
      const token = await minted;
      for (const transport of TRANSPORTS) {
        for (const [method, request] of [
          ["whoAmI", {}],
          ["createVoiceModel", modelInput()],
          ["listVoiceModels", {}],
          ["getVoiceModel", { modelId: "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11" }],
        ] as const) {
          const outcome = await server().call(transport, method, request, token);
          expect({ name, transport, method, code: outcome.code, reason: outcome.errorInfo?.reason }).toEqual({
            name,
            transport,
            method,
            code: Code.Unauthenticated,
            reason: "UNAUTHENTICATED",
          });
          expect(outcome.errorMessage).toMatch(message);
        }
      }
    }
  });

  test("a verified (cached) token stops working when it expires", async () => {
    const token = await mintToken(uniqueUser(), { expiresInSeconds: 2 });
    expect((await server().call("grpc", "whoAmI", {}, token)).code).toBe(0);
    expect((await server().call("connect", "whoAmI", {}, token)).code).toBe(0);
    await sleep(2_500);
    expectRpcError(await server().call("grpc", "whoAmI", {}, token), { code: Code.Unauthenticated, reason: "UNAUTHENTICATED" });
  });
});
