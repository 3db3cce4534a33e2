// The batch calls (BatchGetVoiceModels, BatchUpdateVoiceModels, BatchDeleteVoiceModels), over
// both transports: each item gives what its single call would have given, which a twin user
// checks by making the same calls one at a time (results and final state compared);
// all_or_nothing writes nothing when one item fails; rate limits count items.
import { create } from "@bufbuild/protobuf";
import { anyUnpack, FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import type { Status } from "../gen/google/rpc/status_pb";
import type { VoiceModel } from "../gen/voicemodel/v1/voice_model_pb";
import { expectErrorInfo, expectRpcError } from "./helpers/expect-error";
import {
  createModel,
  startTestServer,
  TRANSPORTS,
  uniqueUser,
  useTestServer,
  type Actor,
  type MethodName,
  type RpcOutcome,
  type TestServer,
  type Transport,
} from "./helpers/harness";

const server = useTestServer();
const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });

let admin: Actor;
let service: Actor;
let stranger: Actor;
/** A model of another user: items naming it are refused ACCESS_DENIED. */
let foreign: VoiceModel;
/** A model id nobody has. */
const MISSING = randomUUID();

beforeAll(async () => {
  admin = await server().adminActor();
  service = await server().serviceActor();
  stranger = await server().actor(uniqueUser("stranger"));
  foreign = await createModel(stranger, { qualityScore: 0.5 });
});

/** What a test knows of one user's models: symbolic names for their ids (and the shared ones). */
class Names {
  private readonly byId = new Map<string, string>([
    [MISSING, "missing"],
    ["", ""],
  ]);
  constructor() {
    this.byId.set(foreign.id, "foreign");
  }
  add(id: string, name: string) {
    this.byId.set(id, name);
  }
  of(id: string | undefined): string | undefined {
    return id === undefined ? undefined : (this.byId.get(id) ?? `unknown:${id}`);
  }
}

/** A model as a comparison sees it: ids as names, no timestamps, etags or owner. */
function shape(model: VoiceModel | undefined, names: Names) {
  if (!model) return undefined;
  const { id, userId: _u, etag: _e, createdAt: _c, updatedAt: _up, deletedAt, $typeName: _t, ...rest } = model as VoiceModel & Record<string, unknown>;
  return { name: names.of(id), deleted: deletedAt !== undefined, ...rest };
}

/** An error as a comparison sees it: code, reason and subject (the model as its name). */
const errorShape = (code: number, info: { reason: string; metadata: Record<string, string> } | undefined, names: Names) => ({
  code: Code[code],
  reason: info?.reason,
  field: info?.metadata.field,
  modelId: names.of(info?.metadata.modelId),
});

/** The ErrorInfo inside a batch item's google.rpc.Status. */
const infoOf = (status: Status) => anyUnpack(status.details[0], ErrorInfoSchema);

type ItemResult = { result: { case: "model"; value: VoiceModel } | { case: "error"; value: Status } | { case: undefined }; activeModelId?: string };

/** A batch item's result as a comparison sees it; its ErrorInfo is checked to be a complete one of this call. */
function itemShape(item: ItemResult, names: Names, requestId: string | undefined) {
  const { result } = item;
  if (result.case === "model") return { model: shape(result.value, names), ...("activeModelId" in item ? { active: names.of(item.activeModelId) } : {}) };
  if (result.case !== "error") throw new Error("a batch item with no result");
  const info = infoOf(result.value);
  expectErrorInfo(info, { code: result.value.code, reason: info!.reason }, requestId);
  return { error: errorShape(result.value.code, info, names) };
}

/** A single call's outcome shaped like a batch item's. */
function singleShape(outcome: RpcOutcome, names: Names, withActive: boolean) {
  if (outcome.code !== 0) return { error: errorShape(outcome.code, outcome.errorInfo, names) };
  return { model: shape(outcome.message.model, names), ...(withActive ? { active: names.of(outcome.message.activeModelId) } : {}) };
}

async function ok(transport: Transport, method: MethodName, request: object, token: string) {
  const outcome = await server().call(transport, method, request, token);
  if (outcome.code !== 0) throw new Error(`${method} failed: ${Code[outcome.code]} ${outcome.errorMessage}`);
  return outcome;
}

/** Every model of a user (deleted ones too), by name, and the active one. */
async function stateOf(userId: string, names: Names) {
  const { message } = await admin.grpc.listVoiceModels({ userId, showDeleted: true, limit: 100 });
  const models = message.models.map((m) => shape(m, names)!).sort((a, b) => String(a.name).localeCompare(String(b.name)));
  const active = (await admin.grpc.getActiveVoiceModel({ userId })).message.model;
  return { models, active: names.of(active?.id) };
}

/** The same models for a user, in order, named m0, m1, ...; `deleted` ones are deleted before the test. */
async function makeModels(actor: Actor, names: Names, specs: Array<Parameters<typeof createModel>[1] & { deleted?: boolean }>) {
  const models: VoiceModel[] = [];
  for (const [i, { deleted, ...spec }] of specs.entries()) {
    const model = await createModel(actor, { modelPath: `twin/m${i}.pth`, ...spec });
    names.add(model.id, `m${i}`);
    if (deleted) await actor.grpc.deleteVoiceModel({ modelId: model.id });
    models.push(model);
  }
  return models;
}

/** Two users with the same models: one gets the batch, the other (the twin) the same calls one at a time. */
async function twins(specs: Parameters<typeof makeModels>[2]) {
  const a = await server().actor(uniqueUser("batch"));
  const b = await server().actor(uniqueUser("twin"));
  const namesA = new Names();
  const namesB = new Names();
  const modelsA = await makeModels(a, namesA, specs);
  const modelsB = await makeModels(b, namesB, specs);
  return { a, b, namesA, namesB, modelsA, modelsB };
}

const SPECS = [
  { qualityScore: 0.9 }, // m0: active
  { qualityScore: 0.7 }, // m1
  { qualityScore: 0.5, metadata: { keep: true } }, // m2
  { qualityScore: 0.85, status: "training" }, // m3: not completed yet
  { qualityScore: 0.6, deleted: true }, // m4: deleted
];

describe.each(TRANSPORTS)("over %s", (transport) => {
  test("BatchUpdateVoiceModels: every item as its single call, activation and etags included", async () => {
    const { a, b, namesA, namesB, modelsA, modelsB } = await twins(SPECS);
    // The service role may change status; its items run on the users' models.
    const items = (m: VoiceModel[]) => [
      { modelId: m[1].id, qualityScore: 0.95 }, // a score edit never moves activation
      { modelId: m[0].id, status: "failed" }, // the active model leaves "completed": m1 takes over
      { modelId: m[2].id, sampleRate: 16000, etag: m[2].etag },
      { modelId: m[2].id, qualityScore: 0.1, etag: m[2].etag }, // that etag is stale now: ETAG_MISMATCH
      { modelId: m[3].id, status: "completed" }, // completed above 0.800: activated
      { modelId: MISSING, qualityScore: 0.2 },
      { modelId: m[1].id, qualityScore: 2 }, // INVALID_ARGUMENT qualityScore
      { modelId: m[1].id, updateMask: mask("bogus") }, // INVALID_ARGUMENT updateMask
      { modelId: m[4].id, qualityScore: 0.3 }, // deleted: not found
      { modelId: foreign.id, metadata: { by: "service" }, updateMask: mask("metadata") }, // the service may
      { modelId: m[2].id, metadata: {}, updateMask: mask("metadata") }, // masked and absent: cleared
    ];
    const batch = await ok(transport, "batchUpdateVoiceModels", { items: items(modelsA) }, service.token);
    const batched = (batch.message.results as ItemResult[]).map((r) => itemShape(r, namesA, batch.requestId));
    const single = [];
    for (const item of items(modelsB)) single.push(singleShape(await server().call(transport, "updateVoiceModel", item, service.token), namesB, false));
    expect(batched).toEqual(single);
    expect(batched.map((r) => (r.error ? r.error.reason : "ok"))).toEqual([
      "ok",
      "ok",
      "ok",
      "ETAG_MISMATCH",
      "ok",
      "VOICE_MODEL_NOT_FOUND",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "VOICE_MODEL_NOT_FOUND",
      "ok",
      "ok",
    ]);
    expect(await stateOf(a.userId, namesA)).toEqual(await stateOf(b.userId, namesB));
    expect((await stateOf(a.userId, namesA)).active).toBe("m3");
  });

  test("BatchUpdateVoiceModels by a user: another user's model and a status change are refused per item", async () => {
    const { a, b, namesA, namesB, modelsA, modelsB } = await twins(SPECS.slice(0, 3));
    const items = (m: VoiceModel[]) => [
      { modelId: m[1].id, metadata: { n: 1 } },
      { modelId: foreign.id, qualityScore: 0.1 },
      { modelId: m[0].id, status: "failed" }, // users may not change status
      { modelId: m[1].id, metadata: { n: 2 }, etag: m[1].etag }, // stale after item 0
      { modelId: m[2].id, sampleRate: 48000 },
    ];
    const before = (await admin.grpc.getVoiceModel({ modelId: foreign.id })).message.model;
    const batch = await ok(transport, "batchUpdateVoiceModels", { items: items(modelsA) }, a.token);
    const batched = (batch.message.results as ItemResult[]).map((r) => itemShape(r, namesA, batch.requestId));
    const single = [];
    for (const item of items(modelsB)) single.push(singleShape(await server().call(transport, "updateVoiceModel", item, b.token), namesB, false));
    expect(batched).toEqual(single);
    expect(batched[1]).toEqual({ error: { code: "PermissionDenied", reason: "ACCESS_DENIED", field: undefined, modelId: "foreign" } });
    expect(batched[2]).toEqual({ error: { code: "PermissionDenied", reason: "ACCESS_DENIED", field: "status", modelId: "m0" } });
    expect(await stateOf(a.userId, namesA)).toEqual(await stateOf(b.userId, namesB));
    expect((await admin.grpc.getVoiceModel({ modelId: foreign.id })).message.model).toEqual(before);
    // Refused items are audited as refused single calls are: one access.denied event each.
    const audit = await admin.grpc.listAuditEvents({ userId: a.userId, action: "access.denied", limit: 10 });
    const events = audit.message.events.filter((e) => e.requestId === batch.requestId);
    expect(events.map((e) => [e.modelId, e.resultCode, e.details?.itemIndex]).sort()).toEqual(
      [
        [foreign.id, "ACCESS_DENIED", 1],
        [modelsA[0].id, "ACCESS_DENIED", 2],
      ].sort(),
    );
    expect(events.find((e) => e.modelId === modelsA[0].id)!.details!.message).toMatch(/only the service and admin roles may change status/);
  });

  test("BatchDeleteVoiceModels: every item as its single call; the active model's successor; a repeated id is not found", async () => {
    const { a, b, namesA, namesB, modelsA, modelsB } = await twins(SPECS);
    const ids = (m: VoiceModel[]) => [m[1].id, m[0].id, m[0].id, MISSING, foreign.id, m[4].id, m[3].id, m[2].id];
    const batch = await ok(transport, "batchDeleteVoiceModels", { modelIds: ids(modelsA) }, a.token);
    const batched = (batch.message.results as ItemResult[]).map((r) => itemShape(r, namesA, batch.requestId));
    const single = [];
    for (const modelId of ids(modelsB)) {
      single.push(singleShape(await server().call(transport, "deleteVoiceModel", { modelId }, b.token), namesB, true));
    }
    expect(batched).toEqual(single);
    // m1 deleted (m0 stays active); m0 deleted, m2 takes over; m0 again, MISSING: not found; foreign:
    // denied; m4: deleted before; m3 (training) deleted, m2 still active; m2 deleted, none left.
    expect(batched.map((r) => (r.error ? r.error.reason : r.active ?? "none"))).toEqual([
      "m0",
      "m2",
      "VOICE_MODEL_NOT_FOUND",
      "VOICE_MODEL_NOT_FOUND",
      "ACCESS_DENIED",
      "VOICE_MODEL_NOT_FOUND",
      "m2",
      "none",
    ]);
    expect(await stateOf(a.userId, namesA)).toEqual(await stateOf(b.userId, namesB));
    expect((await admin.grpc.getVoiceModel({ modelId: foreign.id })).message.model!.deletedAt).toBeUndefined();
  });

  test("BatchGetVoiceModels: each position answered as GetVoiceModel answers it", async () => {
    const { a, b, namesA, namesB, modelsA, modelsB } = await twins(SPECS);
    const ids = (m: VoiceModel[]) => [m[2].id, MISSING, m[2].id, m[4].id, foreign.id, m[0].id, m[3].id];
    const batch = await ok(transport, "batchGetVoiceModels", { modelIds: ids(modelsA) }, a.token);
    const batched = (batch.message.results as ItemResult[]).map((r) => itemShape(r, namesA, batch.requestId));
    const single = [];
    for (const modelId of ids(modelsB)) single.push(singleShape(await server().call(transport, "getVoiceModel", { modelId }, b.token), namesB, false));
    expect(batched).toEqual(single);
    expect(batched.map((r) => (r.error ? r.error.reason : r.model!.name))).toEqual([
      "m2",
      "VOICE_MODEL_NOT_FOUND",
      "m2",
      "VOICE_MODEL_NOT_FOUND",
      "ACCESS_DENIED",
      "m0",
      "m3",
    ]);
    // The results are the models GetVoiceModel returns, byte for byte.
    const got = (await a.grpc.getVoiceModel({ modelId: modelsA[2].id })).message.model;
    expect((batch.message.results[0] as ItemResult).result).toEqual({ case: "model", value: got });
  });

  test("all_or_nothing: one transaction with the same results as the single calls", async () => {
    const { a, b, namesA, namesB, modelsA, modelsB } = await twins(SPECS);
    const items = (m: VoiceModel[]) => [
      { modelId: m[0].id, status: "failed" },
      { modelId: m[3].id, status: "completed" },
      { modelId: m[2].id, qualityScore: 0.2, etag: m[2].etag }, // m1's changed (activated, then not): m2's holds
      { modelId: m[2].id, metadata: { twice: true } },
    ];
    const batch = await ok(transport, "batchUpdateVoiceModels", { items: items(modelsA), allOrNothing: true }, service.token);
    const batched = (batch.message.results as ItemResult[]).map((r) => itemShape(r, namesA, batch.requestId));
    const single = [];
    for (const item of items(modelsB)) single.push(singleShape(await server().call(transport, "updateVoiceModel", item, service.token), namesB, false));
    expect(batched).toEqual(single);
    expect(await stateOf(a.userId, namesA)).toEqual(await stateOf(b.userId, namesB));

    const deletes = await ok(transport, "batchDeleteVoiceModels", { modelIds: [modelsA[3].id, modelsA[1].id], allOrNothing: true }, a.token);
    const deleted = (deletes.message.results as ItemResult[]).map((r) => itemShape(r, namesA, deletes.requestId));
    const singleDeletes = [];
    for (const modelId of [modelsB[3].id, modelsB[1].id]) {
      singleDeletes.push(singleShape(await server().call(transport, "deleteVoiceModel", { modelId }, b.token), namesB, true));
    }
    expect(deleted).toEqual(singleDeletes);
    expect(await stateOf(a.userId, namesA)).toEqual(await stateOf(b.userId, namesB));
  });

  test("all_or_nothing: the first failing item fails the call with its error and itemIndex; nothing is written", async () => {
    const a = await server().actor(uniqueUser("atomic"));
    const names = new Names();
    const m = await makeModels(a, names, SPECS);
    const before = await stateOf(a.userId, names);
    const cases: Array<{ method: MethodName; request: object; token: string; expected: Parameters<typeof expectRpcError>[1]; index: number }> = [
      {
        method: "batchUpdateVoiceModels",
        request: { allOrNothing: true, items: [{ modelId: m[0].id, status: "failed" }, { modelId: m[1].id, qualityScore: 0.3 }, { modelId: m[2].id, sampleRate: 8000, etag: "stale" }, { modelId: MISSING, qualityScore: 0.1 }] },
        token: service.token,
        expected: { code: Code.Aborted, reason: "ETAG_MISMATCH", field: "etag", modelId: m[2].id },
        index: 2,
      },
      {
        method: "batchUpdateVoiceModels",
        request: { allOrNothing: true, items: [{ modelId: m[1].id, qualityScore: 0.3 }, { modelId: m[1].id, sampleRate: 12345 }] },
        token: a.token,
        expected: { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "sampleRate" },
        index: 1,
      },
      {
        method: "batchUpdateVoiceModels",
        request: { allOrNothing: true, items: [{ modelId: m[1].id, qualityScore: 0.3 }, { modelId: foreign.id, qualityScore: 0.3 }] },
        token: a.token,
        expected: { code: Code.PermissionDenied, reason: "ACCESS_DENIED", modelId: foreign.id },
        index: 1,
      },
      {
        method: "batchDeleteVoiceModels",
        request: { allOrNothing: true, modelIds: [m[0].id, m[1].id, m[0].id] },
        token: a.token,
        expected: { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: m[0].id },
        index: 2,
      },
      {
        method: "batchDeleteVoiceModels",
        request: { allOrNothing: true, modelIds: [m[2].id, m[4].id] },
        token: a.token,
        expected: { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: m[4].id },
        index: 1,
      },
    ];
    for (const { method, request, token, expected, index } of cases) {
      const outcome = await server().call(transport, method, request, token);
      expectRpcError(outcome, expected);
      expect(outcome.errorInfo!.metadata.itemIndex).toBe(String(index));
      expect(await stateOf(a.userId, names)).toEqual(before);
    }
  });

  test("concurrent batches on the same models: each model deleted once, never two active", async () => {
    const a = await server().actor(uniqueUser("race"));
    const m: VoiceModel[] = [];
    for (let i = 0; i < 8; i++) m.push(await createModel(a, { qualityScore: 0.5 + i * 0.05 }));
    const ids = m.map((x) => x.id);
    const calls = [
      server().call(transport, "batchDeleteVoiceModels", { modelIds: [ids[7], ids[6], ids[5]], allOrNothing: true }, a.token),
      server().call(transport, "batchDeleteVoiceModels", { modelIds: [ids[5], ids[4], ids[7]] }, a.token),
      server().call(transport, "batchDeleteVoiceModels", { modelIds: [ids[3], ids[6]], allOrNothing: true }, a.token),
      server().call(transport, "batchUpdateVoiceModels", { items: ids.map((modelId) => ({ modelId, status: "completed" })) }, service.token),
    ];
    const outcomes = await Promise.all(calls);
    // Every id's deletes across the batches: exactly one succeeded when any batch deleted it.
    const deletedBy = new Map<string, number>();
    for (const outcome of outcomes.slice(0, 3)) {
      if (outcome.code !== 0) continue;
      for (const r of outcome.message.results as ItemResult[]) {
        if (r.result.case === "model") deletedBy.set(r.result.value.id, (deletedBy.get(r.result.value.id) ?? 0) + 1);
      }
    }
    expect([...deletedBy.values()].every((n) => n === 1)).toBe(true);
    const { message } = await admin.grpc.listVoiceModels({ userId: a.userId, showDeleted: true, limit: 100 });
    const deleted = message.models.filter((x) => x.deletedAt !== undefined).map((x) => x.id);
    expect(deleted.sort()).toEqual([...deletedBy.keys()].sort());
    const live = message.models.filter((x) => x.deletedAt === undefined);
    expect(live.filter((x) => x.isActive).length).toBe(live.length > 0 ? 1 : 0);
  });

  test("1 to 100 items: 100 are served, 0 and 101 are INVALID_ARGUMENT naming the list, and change nothing", async () => {
    const a = await server().actor(uniqueUser("hundred"));
    const models: VoiceModel[] = [];
    for (let i = 0; i < 20; i++) models.push(await createModel(a, { qualityScore: 0.5 }));
    const ids = Array.from({ length: 100 }, (_, i) => models[i % 20].id);

    const got = await ok(transport, "batchGetVoiceModels", { modelIds: ids }, a.token);
    expect((got.message.results as ItemResult[]).map((r) => (r.result.case === "model" ? r.result.value.id : r.result.case))).toEqual(ids);
    const updated = await ok(transport, "batchUpdateVoiceModels", { items: ids.map((modelId, i) => ({ modelId, metadata: { i } })) }, a.token);
    expect((updated.message.results as ItemResult[]).every((r) => r.result.case === "model")).toBe(true);
    // Each model took its five updates in order: the last one stays.
    expect((await a.grpc.getVoiceModel({ modelId: models[3].id })).message.model!.metadata).toEqual({ i: 83 });

    const tooMany = [...ids, models[0].id];
    const refusals: Array<[MethodName, object, string]> = [
      ["batchGetVoiceModels", { modelIds: tooMany }, "modelIds"],
      ["batchGetVoiceModels", { modelIds: [] }, "modelIds"],
      ["batchUpdateVoiceModels", { items: tooMany.map((modelId) => ({ modelId, qualityScore: 0.9 })) }, "items"],
      ["batchUpdateVoiceModels", { items: [], allOrNothing: true }, "items"],
      ["batchDeleteVoiceModels", { modelIds: tooMany }, "modelIds"],
      ["batchDeleteVoiceModels", { modelIds: [], allOrNothing: true }, "modelIds"],
      // One malformed id refuses the whole batch before anything runs, naming the item.
      ["batchDeleteVoiceModels", { modelIds: [models[0].id, models[1].id, models[2].id, "not-a-uuid"] }, "modelIds[3]"],
      ["batchUpdateVoiceModels", { items: [{ modelId: models[0].id, qualityScore: 0.9 }, { modelId: models[1].id }, { modelId: "x", qualityScore: 0.9 }] }, "items[2].modelId"],
    ];
    const names = new Names();
    const before = await stateOf(a.userId, names);
    for (const [method, request, field] of refusals) {
      expectRpcError(await server().call(transport, method, request, a.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field });
    }
    expect(await stateOf(a.userId, names)).toEqual(before);

    const deleted = await ok(transport, "batchDeleteVoiceModels", { modelIds: ids }, a.token);
    const reasons = (deleted.message.results as ItemResult[]).map((r) => (r.result.case === "error" ? infoOf(r.result.value)!.reason : "deleted"));
    expect(reasons).toEqual(ids.map((_, i) => (i < 20 ? "deleted" : "VOICE_MODEL_NOT_FOUND")));
  });
});

describe("rate limits count items", () => {
  let limited: TestServer;
  beforeAll(async () => {
    limited = await startTestServer({ database: server().db, env: { RATE_LIMITS_ENABLED: "true", RATE_LIMIT_UPDATE: "5/3600" } });
  });
  afterAll(async () => {
    await limited?.close();
  });

  async function userWithModels(n: number) {
    const user = await limited.actor(uniqueUser("limited"));
    const models = [];
    for (let i = 0; i < n; i++) models.push(await createModel(user, { qualityScore: 0.5 }));
    return { user, ids: models.map((m) => m.id) };
  }
  const update = (modelId: string, qualityScore = 0.6) => ({ modelId, qualityScore });
  // Read through the same server (its caches saw the writes).
  const scores = async (ids: string[]) => {
    const reader = await limited.adminActor();
    return Promise.all(ids.map(async (modelId) => (await reader.grpc.getVoiceModel({ modelId })).message.model!.qualityScore));
  };

  test.each(TRANSPORTS)("over %s: a batch needing more slots than remain is refused whole, before any item runs", async (transport) => {
    const { user, ids } = await userWithModels(3);
    await user.grpc.updateVoiceModel(update(ids[0], 0.55));
    // 4 slots left: 5 items are refused whole, nothing changes.
    const refused = await limited.call(transport, "batchUpdateVoiceModels", { items: [...ids, ids[1], ids[2]].map((id) => update(id)) }, user.token);
    expectRpcError(refused, { code: Code.ResourceExhausted, reason: "RATE_LIMITED", message: /batch of 5 items needs 5 slots, 4 left/ });
    expect(Number(refused.errorInfo!.metadata.retryAfterSeconds)).toBeGreaterThan(3500);
    expect(await scores(ids)).toEqual([0.55, 0.5, 0.5]);
    // 4 items fit exactly; then nothing is left.
    const fit = await limited.call(transport, "batchUpdateVoiceModels", { items: [ids[0], ids[1], ids[2], ids[0]].map((id) => update(id, 0.7)) }, user.token);
    expect(fit.code).toBe(0);
    expect(await scores(ids)).toEqual([0.7, 0.7, 0.7]);
    expectRpcError(await limited.call(transport, "updateVoiceModel", update(ids[1]), user.token), { code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
    expectRpcError(await limited.call(transport, "batchUpdateVoiceModels", { items: [update(ids[1])] }, user.token), {
      code: Code.ResourceExhausted,
      reason: "RATE_LIMITED",
    });
  });

  test("items refused by validation or access give their slot back; an etag mismatch keeps it", async () => {
    const { user, ids } = await userWithModels(2);
    const { message } = await user.grpc.batchUpdateVoiceModels({
      items: [update(ids[0]), update(MISSING), { modelId: ids[1], qualityScore: 7 }, update(foreign.id), { ...update(ids[1]), etag: "stale" }],
    });
    expect(message.results.map((r) => (r.result.case === "error" ? infoOf(r.result.value)!.reason : "ok"))).toEqual([
      "ok",
      "VOICE_MODEL_NOT_FOUND",
      "INVALID_ARGUMENT",
      "ACCESS_DENIED",
      "ETAG_MISMATCH",
    ]);
    // Two counted (the update and the etag mismatch): three left.
    for (let i = 0; i < 3; i++) await user.grpc.updateVoiceModel(update(ids[1], 0.8));
    expectRpcError(await limited.call("grpc", "updateVoiceModel", update(ids[1]), user.token), { code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
  });

  test("a failed all_or_nothing batch keeps the slots of the items it ran, not the refused one's or those after it", async () => {
    const { user, ids } = await userWithModels(2);
    const outcome = await limited.call(
      "grpc",
      "batchUpdateVoiceModels",
      { allOrNothing: true, items: [update(ids[0]), update(ids[1]), update(MISSING), update(ids[0]), update(ids[1])] },
      user.token,
    );
    expectRpcError(outcome, { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND" });
    expect(await scores(ids)).toEqual([0.5, 0.5]);
    // Items 0 and 1 ran: three left.
    const three = await limited.call("grpc", "batchUpdateVoiceModels", { items: [update(ids[0]), update(ids[1]), update(ids[0])] }, user.token);
    expect(three.code).toBe(0);
    expectRpcError(await limited.call("grpc", "updateVoiceModel", update(ids[1]), user.token), { code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
  });

  test("a batch of 0 or 101 items is INVALID_ARGUMENT whatever is left of the limit, and takes no slot", async () => {
    const { user, ids } = await userWithModels(1);
    for (const items of [[], Array.from({ length: 101 }, () => update(ids[0]))]) {
      expectRpcError(await limited.call("grpc", "batchUpdateVoiceModels", { items }, user.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "items" });
    }
    const five = await limited.call("grpc", "batchUpdateVoiceModels", { items: Array.from({ length: 5 }, () => update(ids[0])) }, user.token);
    expect(five.code).toBe(0);
  });

  test("service and admin callers are exempt", async () => {
    const { ids } = await userWithModels(1);
    const serviceCaller = await limited.serviceActor();
    const { message } = await serviceCaller.grpc.batchUpdateVoiceModels({ items: Array.from({ length: 50 }, () => update(ids[0])) });
    expect(message.results.every((r) => r.result.case === "model")).toBe(true);
  });
});
