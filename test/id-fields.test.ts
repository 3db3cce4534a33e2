// Every id field of every request message, found through the service descriptor, and every id
// segment of the HTTP file routes: a value that is not an id of its kind is INVALID_ARGUMENT
// naming the field, over both transports, before anything reaches a query.
import type { DescField, DescMessage } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { expectRpcError, httpError } from "./helpers/expect-error";
import { createModel, TRANSPORTS, uniqueUser, useTestServer, type Actor, type MethodName } from "./helpers/harness";

const server = useTestServer();

/** What an id field holds, decided by its name; a field this does not cover fails the test below. */
function kindOf(field: DescField): "uuid" | "user" | "free" | undefined {
  const name = field.name;
  // Chosen by the caller, never parsed: the training job's own id.
  if (name === "training_job_id") return "free";
  // A position in the event stream: a number, checked as one (events/watch.test.ts).
  if (name === "after_event_id") return "free";
  if (/(^|_)(user_id|user_ids|owner_id)$/.test(name)) return "user";
  // lineage_of: ListVoiceModels' filter by a model's lineage.
  if (name === "id" || name === "lineage_of" || /(^|_)(model_id|model_ids|backup_id|entry_id|consent_id|upload_id)$/.test(name)) return "uuid";
  return /(_id|_ids)$/.test(name) ? undefined : "free";
}

const NOT_UUIDS = [
  "not-a-uuid",
  "' or 1=1 --",
  "0123456789abcdef0123456789abcdef01234567", // 40 hex digits
  "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a1g",
  "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a110",
  "{0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11}",
  "------------------------------------",
];
const NOT_USER_IDS = ["' or 1=1 --", "a b", "u".repeat(129), "ünï", "x/../y"];

interface IdField {
  /** From the request message to the field (oneof members and message fields on the way). */
  path: DescField[];
  kind: "uuid" | "user";
}

/** The id fields of a request message, nested ones included. */
function idFields(message: DescMessage, prefix: DescField[] = []): IdField[] {
  const out: IdField[] = [];
  for (const field of message.fields) {
    const path = [...prefix, field];
    const kind = kindOf(field);
    if (kind === undefined) throw new Error(`${message.typeName}.${field.name}: an id field this test does not know; add it to kindOf`);
    if (kind === "uuid" || kind === "user") out.push({ path, kind });
    const nested = field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message") ? field.message : undefined;
    if (nested && !nested.typeName.startsWith("google.") && prefix.length < 3) out.push(...idFields(nested, path));
  }
  return out;
}

interface Ctx {
  me: Actor;
  modelId: string;
}

type Caller = "user" | "service" | "admin";

/** A request that is valid apart from the field the test spoils, and who sends it. */
interface Base {
  caller?: Caller;
  request(ctx: Ctx): object | object[];
}

const usage = (ctx: Ctx) => ({ modelId: ctx.modelId, userId: ctx.me.userId, characters: 10n, latencyMs: 5, cost: 0, idempotencyKey: "k-1" });
const importHeader = (ctx: Ctx) => ({
  formatVersion: 1,
  model: { id: ctx.modelId, userId: ctx.me.userId, provider: "xtts-v2", sampleRate: 22050 },
  sizeBytes: 0n,
  sha256: "0".repeat(64),
});
const byId = (ctx: Ctx) => ({ modelId: ctx.modelId });
const consentRequest = (target: object) => ({
  ...target,
  speaker: { kind: "owner" },
  statementText: "I agree",
  statementVersion: "v1",
  captureMethod: "in_app_recording",
});

const BASES: Partial<Record<MethodName, Base>> = {
  createVoiceModel: { request: () => ({ provider: "xtts-v2", modelPath: "ids.pth" }) },
  getVoiceModel: { request: byId },
  listVoiceModels: { request: () => ({}) },
  getVoiceModelLineage: { request: byId },
  updateVoiceModel: { request: (ctx) => ({ modelId: ctx.modelId, qualityScore: 0.5 }) },
  deleteVoiceModel: { request: byId },
  batchGetVoiceModels: { request: (ctx) => ({ modelIds: [ctx.modelId] }) },
  batchUpdateVoiceModels: { request: (ctx) => ({ items: [{ modelId: ctx.modelId, qualityScore: 0.5 }] }) },
  batchDeleteVoiceModels: { request: (ctx) => ({ modelIds: [ctx.modelId] }) },
  activateVoiceModel: { request: byId },
  deactivateVoiceModel: { request: byId },
  getActiveVoiceModel: { request: () => ({}) },
  recordUsage: { caller: "service", request: usage },
  recordUsageBatch: { caller: "service", request: (ctx) => ({ events: [usage(ctx)] }) },
  getVoiceModelUsageStats: { request: byId },
  getVoiceModelAnalytics: { request: () => ({}) },
  getVoiceModelUsageSeries: { request: byId },
  getFleetAnalytics: { caller: "admin", request: () => ({}) },
  compareVoiceModels: { request: (ctx) => ({ modelIds: [ctx.modelId] }) },
  selectBestVoiceModel: { request: () => ({}) },
  shareVoiceModel: { request: (ctx) => ({ modelId: ctx.modelId, targetUserIds: ["a-friend"], permissions: ["view"] }) },
  revokeShare: { request: (ctx) => ({ modelId: ctx.modelId, targetUserIds: ["a-friend"] }) },
  listSharedVoiceModels: { request: () => ({}) },
  listModelShares: { request: () => ({}) },
  listExpiringModels: { request: () => ({}) },
  listAuditEvents: { request: () => ({}) },
  uploadModelFile: { request: (ctx) => [{ part: { case: "header", value: byId(ctx) } }, { part: { case: "chunk", value: new Uint8Array([1, 2]) } }] },
  readModelFile: { request: byId },
  startModelFileUpload: { request: (ctx) => ({ ...byId(ctx), sizeBytes: 1n, sha256: "0".repeat(64) }) },
  appendModelFileUpload: { request: () => ({ uploadId: "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11", offset: 0n, data: new Uint8Array([1]) }) },
  finishModelFileUpload: { request: () => ({ uploadId: "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11" }) },
  readBackup: { request: () => ({ backupId: "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11" }) },
  exportVoiceModel: { request: byId },
  importVoiceModel: { request: (ctx) => [{ part: { case: "header", value: importHeader(ctx) } }] },
  undeleteVoiceModel: { request: byId },
  createBackup: { request: () => ({}) },
  listBackups: { request: () => ({}) },
  restoreBackup: { request: (ctx) => ({ backupPath: `backups/${ctx.me.userId}/x.vmb` }) },
  deleteUserData: { caller: "admin", request: (ctx) => ({ userId: ctx.me.userId }) },
  listActivationHistory: { request: () => ({}) },
  rollbackActiveModel: { request: () => ({}) },
  watchVoiceModelEvents: { request: () => ({}) },
  recordConsent: { request: (ctx) => consentRequest({ modelId: ctx.modelId }) },
  getConsent: { request: () => ({ consentId: "" }) },
  listConsents: { request: () => ({}) },
  revokeConsent: { request: () => ({ consentId: "" }) },
  uploadConsentRecording: { request: () => [{ part: { case: "header", value: { consentId: "" } } }, { part: { case: "chunk", value: new Uint8Array([1]) } }] },
  readConsentRecording: { request: () => ({ consentId: "" }) },
  listModelsMissingConsent: { caller: "admin", request: () => ({}) },
};

/** A copy of a plain request with the field at `path` set to `value` (appended to a list). */
function spoil(request: unknown, path: DescField[], value: string): unknown {
  const copy = structuredClone(request) as Record<string, any>;
  let at: Record<string, any> = Array.isArray(copy) ? copy[0] : copy;
  for (const field of path.slice(0, -1)) {
    if (field.oneof) {
      if (at[field.oneof.localName]?.case !== field.localName) at[field.oneof.localName] = { case: field.localName, value: {} };
      at = at[field.oneof.localName].value;
    } else if (field.fieldKind === "list") {
      at = (at[field.localName] ??= [{}])[0];
    } else {
      at = at[field.localName] ??= {};
    }
  }
  const last = path[path.length - 1];
  at[last.localName] = last.fieldKind === "list" ? [...(at[last.localName] ?? []), value] : value;
  return copy;
}

const CASES = VoiceModelService.methods.flatMap((method) =>
  idFields(method.input).map((f) => ({
    method: method.localName as MethodName,
    name: `${method.name} ${f.path.map((p) => p.name).join(".")}`,
    ...f,
  })),
);

let ctx: Ctx;
const tokens: Partial<Record<Caller, string>> = {};

beforeAll(async () => {
  const me = await server().actor(uniqueUser("ids"));
  ctx = { me, modelId: (await createModel(me, { qualityScore: 0.5 })).id };
  tokens.user = me.token;
  tokens.service = (await server().serviceActor()).token;
  tokens.admin = (await server().adminActor()).token;
});

test("every RPC with an id field has a base request here", () => {
  expect(CASES.length).toBeGreaterThan(30);
  expect([...new Set(CASES.map((c) => c.method))].filter((m) => !BASES[m])).toEqual([]);
});

describe.each(TRANSPORTS)("over %s", (transport) => {
  test.each(CASES)("$name: not an id of its kind is INVALID_ARGUMENT naming it", async ({ method, path, kind }) => {
    const base = BASES[method]!;
    const leaf = path[path.length - 1].localName;
    for (const value of kind === "uuid" ? NOT_UUIDS : NOT_USER_IDS) {
      const outcome = await server().call(transport, method, spoil(base.request(ctx), path, value) as object, tokens[base.caller ?? "user"]);
      expect({ value, code: outcome.code, reason: outcome.errorInfo?.reason, error: outcome.errorMessage }).toMatchObject({
        value,
        code: Code.InvalidArgument,
        reason: "INVALID_ARGUMENT",
      });
      expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT" });
      // Named by its path (header.model.id, events[0].modelId) or its own name.
      expect(outcome.errorInfo!.metadata.field).toMatch(new RegExp(`(^|[.\\]])${leaf}(\\[\\d+\\])?$`));
    }
    // The caller's model is as it was.
    const { message } = await ctx.me.grpc.getVoiceModel({ modelId: ctx.modelId });
    expect(message.model!.qualityScore).toBe(0.5);
  });
});

describe("HTTP file routes", () => {
  const routes = [
    { method: "GET", path: (id: string) => `/v1/voice-models/${id}/file`, field: "modelId" },
    { method: "PUT", path: (id: string) => `/v1/voice-models/${id}/file`, field: "modelId" },
    { method: "GET", path: (id: string) => `/v1/voice-models/${id}/export`, field: "modelId" },
    { method: "GET", path: (id: string) => `/v1/backups/${id}`, field: "backupId" },
  ];
  test.each(routes)("$method $field segment that is not a UUID: 400 INVALID_ARGUMENT naming it", async (route) => {
    for (const value of NOT_UUIDS) {
      const response = await server().fetch(route.path(encodeURIComponent(value)), {
        method: route.method,
        token: ctx.me.token,
        ...(route.method === "PUT" ? { body: "abc", headers: { "content-type": "application/octet-stream" } } : {}),
      });
      const error = httpError(response.body);
      expect({ value, status: response.status, code: error?.code, field: error?.errorInfo?.metadata.field }).toEqual({
        value,
        status: 400,
        code: Code.InvalidArgument,
        field: route.field,
      });
    }
  });
});
