// Consent records: recorded for a model or a training job, read by the owner and admins, their
// recordings sealed like model files; CONSENT_REQUIRED keeps models without consent from becoming
// completed or active; RevokeConsent deletes the model for good and leaves no trace of it.
import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseConfig } from "../src/config";
import { masterKeySource, openKeyProvider, openBlobStore } from "../src/storage/open-storage";
import { SealedStore } from "../src/storage/sealed-store";
import { JWT_SECRET } from "./helpers/env";
import { expectRpcError } from "./helpers/expect-error";
import { activeId, createModel, startTestServer, TRANSPORTS, uniqueUser, useTestServer, type Actor, type TestServer, type Transport } from "./helpers/harness";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-consent-"));
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const server = useTestServer({ env: { DATA_DIR: dataDir } });

/** A second server on the same database with CONSENT_REQUIRED on (switching it on). */
let required: TestServer;
beforeAll(async () => {
  required = await startTestServer({ database: server().db, env: { DATA_DIR: dataDir, CONSENT_REQUIRED: "true" } });
});
afterAll(async () => {
  await required?.close();
});

const consentRequest = (target: object, overrides: object = {}) => ({
  ...target,
  speaker: { kind: "other", name: "Ada Speakwell" },
  statementText: "I, Ada Speakwell, agree that my voice may be cloned for this account.",
  statementVersion: "2026-11",
  captureMethod: "signed_form",
  samples: [{ ref: "samples/ada-1.wav", sha256: "a".repeat(64) }],
  ...overrides,
});

async function ok(s: TestServer, transport: Transport, method: Parameters<TestServer["call"]>[1], request: object | object[], actor: Pick<Actor, "token">) {
  const outcome = await s.call(transport, method, request, actor.token);
  if (outcome.code !== 0) throw new Error(`${method} failed: ${outcome.errorInfo?.reason} ${outcome.errorMessage}`);
  return outcome.message;
}

const upload = (consentId: string, bytes: Uint8Array, sha256?: string) => [
  { part: { case: "header", value: { consentId, sha256 } } },
  { part: { case: "chunk", value: bytes.subarray(0, 70_000) } },
  { part: { case: "chunk", value: bytes.subarray(70_000) } },
];

describe.each(TRANSPORTS)("over %s", (transport) => {
  test("RecordConsent for a model, GetConsent, ListConsents with page tokens", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const recorded = (await ok(server(), transport, "recordConsent", consentRequest({ modelId: model.id }), alice)).consent;
    expect(recorded).toMatchObject({
      userId: alice.userId,
      modelId: model.id,
      speaker: { kind: "other", name: "Ada Speakwell" },
      statementVersion: "2026-11",
      captureMethod: "signed_form",
      recordedBy: alice.userId,
      samples: [{ ref: "samples/ada-1.wav", sha256: "a".repeat(64) }],
    });
    expect((await ok(server(), transport, "getConsent", { consentId: recorded.id }, alice)).consent).toEqual(recorded);
    // A second record for the same model is refused.
    expectRpcError(await server().call(transport, "recordConsent", consentRequest({ modelId: model.id }), alice.token), {
      code: Code.AlreadyExists,
      reason: "CONSENT_EXISTS",
      modelId: model.id,
    });
    for (let i = 0; i < 2; i++) await ok(server(), transport, "recordConsent", consentRequest({ trainingJobId: `job-${i}` }), alice);
    const first = await ok(server(), transport, "listConsents", { limit: 2 }, alice);
    const second = await ok(server(), transport, "listConsents", { limit: 2, pageToken: first.nextPageToken }, alice);
    const ids = [...first.consents, ...second.consents].map((c: { id: string }) => c.id);
    expect(new Set(ids).size).toBe(3);
    expect(ids).toContain(recorded.id);
    expect(second.nextPageToken).toBe("");
    // A token opens only for its caller and user.
    const admin = await server().adminActor();
    expectRpcError(await server().call(transport, "listConsents", { userId: alice.userId, pageToken: first.nextPageToken }, admin.token), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "pageToken",
    });
    expect((await ok(server(), transport, "listConsents", { userId: alice.userId }, admin)).consents).toHaveLength(3);
  });

  test("bad input is INVALID_ARGUMENT naming the field, and records nothing", async () => {
    const bob = await server().actor();
    const model = await createModel(bob);
    const cases: Array<[object, string]> = [
      [consentRequest({}), "modelId"],
      [consentRequest({ modelId: model.id }, { speaker: { kind: "other" } }), "speaker.name"],
      [consentRequest({ modelId: model.id }, { speaker: { kind: "owner", name: "x" } }), "speaker.name"],
      [consentRequest({ modelId: model.id }, { speaker: { kind: "robot" } }), "speaker.kind"],
      [consentRequest({ modelId: model.id }, { statementText: " " }), "statementText"],
      [consentRequest({ modelId: model.id }, { statementVersion: "" }), "statementVersion"],
      [consentRequest({ modelId: model.id }, { captureMethod: "telepathy" }), "captureMethod"],
      [consentRequest({ modelId: model.id }, { samples: [{ ref: "s", sha256: "nothex" }] }), "samples[0].sha256"],
      [consentRequest({ modelId: model.id }, { capturedAt: { seconds: BigInt(Math.floor(Date.now() / 1000) + 86_400), nanos: 0 } }), "capturedAt"],
    ];
    for (const [request, field] of cases) {
      expectRpcError(await server().call(transport, "recordConsent", request, bob.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field });
    }
    expect((await ok(server(), transport, "listConsents", {}, bob)).consents).toEqual([]);
    expectRpcError(await server().call(transport, "getConsent", { consentId: "00000000-0000-4000-8000-000000000000" }, bob.token), {
      code: Code.NotFound,
      reason: "CONSENT_NOT_FOUND",
      field: "consentId",
    });
  });

  test("the consent recording: sealed, its SHA-256 kept, read back by the owner and admins only", async () => {
    const carol = await server().actor();
    const service = await server().serviceActor();
    const admin = await server().adminActor();
    const consent = (await ok(server(), transport, "recordConsent", consentRequest({ userId: carol.userId, trainingJobId: "rec-job" }), service)).consent;
    expectRpcError(await server().call(transport, "readConsentRecording", { consentId: consent.id }, carol.token), {
      code: Code.FailedPrecondition,
      reason: "CONSENT_RECORDING_MISSING",
    });
    const audio = randomBytes(150_000);
    expectRpcError(await server().call(transport, "uploadConsentRecording", upload(consent.id, audio, "0".repeat(64)), service.token), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "sha256",
    });
    const { createHash } = await import("node:crypto");
    const sha256 = createHash("sha256").update(audio).digest("hex");
    const stored = (await ok(server(), transport, "uploadConsentRecording", upload(consent.id, audio, sha256), service)).consent;
    expect(stored.recording).toMatchObject({ sizeBytes: BigInt(audio.length), sha256 });
    // Stored sealed: the plain bytes appear in no object.
    const objects = listFiles(path.join(dataDir, "blobs"));
    const probe = audio.subarray(1000, 1064);
    expect(objects.filter((f) => fs.readFileSync(f).includes(probe))).toEqual([]);
    for (const reader of [carol, admin]) {
      const messages = await ok(server(), transport, "readConsentRecording", { consentId: consent.id }, reader);
      expect(messages[0]).toMatchObject({ sizeBytes: BigInt(audio.length), sha256 });
      expect(Buffer.concat(messages.map((m: { chunk: Uint8Array }) => m.chunk)).equals(audio)).toBe(true);
    }
    const stranger = await server().actor();
    for (const refused of [service, stranger]) {
      for (const method of ["readConsentRecording", "getConsent"] as const) {
        expectRpcError(await server().call(transport, method, { consentId: consent.id }, refused.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
      }
    }
  });
});

function listFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? listFiles(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

describe("the training flow: consent first, then the model", () => {
  test("RecordConsent by training_job_id, then CreateVoiceModel completed attaches it; retries are idempotent", async () => {
    const service = await required.serviceActor();
    const userId = uniqueUser("trained");
    const job = `job-${randomBytes(4).toString("hex")}`;
    const consent = (await ok(required, "grpc", "recordConsent", consentRequest({ userId, trainingJobId: job }), service)).consent;
    expect(consent.modelId).toBeUndefined();
    const create = { userId, provider: "xtts-v2", modelPath: "trained.pth", trainingJobId: job, qualityScore: 0.7 };
    const model = (await ok(required, "connect", "createVoiceModel", create, service)).model;
    expect(model).toMatchObject({ status: "completed", isActive: true });
    expect((await ok(required, "grpc", "createVoiceModel", create, service)).model.id).toBe(model.id);
    const again = (await ok(required, "grpc", "recordConsent", consentRequest({ userId, trainingJobId: job }), service)).consent;
    expect(again).toMatchObject({ id: consent.id, modelId: model.id });
    const admin = await required.adminActor();
    expect((await ok(required, "grpc", "getConsent", { consentId: consent.id }, admin)).consent.modelId).toBe(model.id);
    // consent_id names the record directly; a used or foreign one is refused.
    const other = (await ok(required, "grpc", "recordConsent", consentRequest({ userId, trainingJobId: `${job}-b` }), service)).consent;
    const named = (await ok(required, "grpc", "createVoiceModel", { ...create, trainingJobId: undefined, modelPath: "b.pth", consentId: other.id }, service)).model;
    expect(named.status).toBe("completed");
    expectRpcError(await required.call("grpc", "createVoiceModel", { ...create, trainingJobId: undefined, consentId: other.id }, service.token), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "consentId",
    });
  });
});

describe("CONSENT_REQUIRED", () => {
  test("off: models without consent are created, completed and activated as before", async () => {
    const dan = await server().actor();
    const model = await createModel(dan);
    expect(model).toMatchObject({ status: "completed", isActive: true });
  });

  test("on: a create that would be completed without consent is CONSENT_MISSING and creates nothing; other paths refuse too", async () => {
    const erin = await required.actor();
    const service = await required.serviceActor();
    expectRpcError(await required.call("grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "e.pth" }, erin.token), {
      code: Code.FailedPrecondition,
      reason: "CONSENT_MISSING",
    });
    expectRpcError(await required.call("connect", "createVoiceModel", { provider: "xtts-v2", modelPath: "e.pth", userId: erin.userId, trainingJobId: "t1" }, service.token), {
      code: Code.FailedPrecondition,
      reason: "CONSENT_MISSING",
    });
    expect((await erin.grpc.listVoiceModels({ showDeleted: true })).message.total).toBe(0);
    // A pending model may exist; it cannot become completed without consent.
    const pending = (await ok(required, "grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "p.pth", status: "pending", userId: erin.userId }, service)).model;
    const toCompleted = { modelId: pending.id, status: "completed" };
    expectRpcError(await required.call("grpc", "updateVoiceModel", toCompleted, service.token), { code: Code.FailedPrecondition, reason: "CONSENT_MISSING", modelId: pending.id });
    expect((await erin.grpc.getVoiceModel({ modelId: pending.id })).message.model!.status).toBe("pending");
    await ok(required, "grpc", "recordConsent", consentRequest({ userId: erin.userId, modelId: pending.id }), service);
    expect((await ok(required, "connect", "updateVoiceModel", toCompleted, service)).model).toMatchObject({ status: "completed", isActive: true });
  });

  test("on: an import or a restore that would bring back completed models without consent is CONSENT_MISSING and changes nothing", async () => {
    const ivy = await server().actor();
    const made = await createModel(ivy, { metadata: { note: "before" } });
    await ok(server(), "grpc", "uploadModelFile", [{ part: { case: "header", value: { modelId: made.id } } }, { part: { case: "chunk", value: randomBytes(1000) } }], ivy);
    const exported = await ok(server(), "grpc", "exportVoiceModel", { modelId: made.id }, ivy);
    const progress = await ok(server(), "grpc", "createBackup", {}, ivy);
    const { backupPath } = progress[progress.length - 1].backup;
    const onRequired = await required.actor(ivy.userId);
    const missing = { code: Code.FailedPrecondition, reason: "CONSENT_MISSING" };
    expectRpcError(await required.call("grpc", "importVoiceModel", exported, ivy.token), missing);
    const consent = (await ok(required, "grpc", "recordConsent", consentRequest({ trainingJobId: "import-job" }), ivy)).consent;
    const imported = (await ok(required, "connect", "importVoiceModel", [{ part: exported[0].part, consentId: consent.id }, ...exported.slice(1)], ivy)).model;
    expect(imported.status).toBe("completed");
    expect((await ok(required, "grpc", "getConsent", { consentId: consent.id }, ivy)).consent.modelId).toBe(imported.id);
    await onRequired.grpc.deleteVoiceModel({ modelId: imported.id });
    await onRequired.grpc.deleteVoiceModel({ modelId: made.id });
    // A soft-deleted model may be restored as it was (deleted); one that would be live again may not.
    const restore = await required.call("connect", "restoreBackup", { backupPath, overwriteExisting: true }, ivy.token);
    expectRpcError(restore, missing);
    const after = (await onRequired.grpc.listVoiceModels({ showDeleted: true })).message.models;
    expect(after.map((m) => [m.id, m.deletedAt !== undefined]).sort()).toEqual([[made.id, true], [imported.id, true]].sort());
  });

  test("switching it on deactivates nothing; activation, undelete, rollback and takeover need consent; the filter and the admin report show the backfill", async () => {
    // Made while the setting was off.
    const fay = await server().actor();
    const old = await createModel(fay, { qualityScore: 0.5 });
    const older = await createModel(fay, { qualityScore: 0.4 });
    const withConsent = await createModel(fay, { qualityScore: 0.3 });
    await ok(server(), "grpc", "recordConsent", consentRequest({ modelId: withConsent.id }), fay);
    const onRequired = await required.actor(fay.userId);
    expect(await activeId(onRequired)).toBe(old.id);
    const listed = (missing: boolean) => onRequired.grpc.listVoiceModels({ consentMissing: missing }).then((r) => r.message.models.map((m) => m.id).sort());
    expect(await listed(true)).toEqual([old.id, older.id].sort());
    expect(await listed(false)).toEqual([withConsent.id]);
    const admin = await required.adminActor();
    const report = await ok(required, "connect", "listModelsMissingConsent", { userId: fay.userId, limit: 1 }, admin);
    expect(report).toMatchObject({ total: 2, active: 1, models: [{ modelId: old.id, userId: fay.userId, isActive: true }] });
    const rest = await ok(required, "grpc", "listModelsMissingConsent", { userId: fay.userId, limit: 1, pageToken: report.nextPageToken }, admin);
    expect(rest.models.map((m: { modelId: string }) => m.modelId)).toEqual([older.id]);
    expectRpcError(await required.call("grpc", "listModelsMissingConsent", {}, fay.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });

    expectRpcError(await required.call("grpc", "activateVoiceModel", { modelId: older.id }, fay.token), { code: Code.FailedPrecondition, reason: "CONSENT_MISSING", modelId: older.id });
    await onRequired.grpc.activateVoiceModel({ modelId: withConsent.id });
    // Undo would bring back the model without consent.
    expectRpcError(await required.call("grpc", "rollbackActiveModel", {}, fay.token), { code: Code.FailedPrecondition, reason: "CONSENT_MISSING", modelId: old.id });
    expectRpcError(await required.call("connect", "selectBestVoiceModel", { activate: true }, fay.token), { code: Code.FailedPrecondition, reason: "CONSENT_MISSING", modelId: old.id });
    // A backfill, then the active model deleted: the takeover passes over the better model without consent.
    await ok(required, "grpc", "recordConsent", consentRequest({ modelId: older.id }), fay);
    await onRequired.grpc.deleteVoiceModel({ modelId: withConsent.id });
    expect(await activeId(onRequired)).toBe(older.id);
    await onRequired.grpc.deleteVoiceModel({ modelId: old.id });
    expectRpcError(await required.call("grpc", "undeleteVoiceModel", { modelId: old.id }, fay.token), { code: Code.FailedPrecondition, reason: "CONSENT_MISSING", modelId: old.id });
    expect(await activeId(onRequired)).toBe(older.id);
  });
});

/** Every stored object decrypted (each found through the row that holds its key), by key. */
async function plaintexts(knex: TestServer["db"]["knex"]): Promise<Map<string, Buffer>> {
  const files = parseConfig({ DATA_DIR: dataDir, JWT_SECRET }).files;
  const sealed = new SealedStore(openBlobStore(files), openKeyProvider(masterKeySource(files, dataDir)));
  const refs = new Map<string, { keyId: string; wrapped: Buffer }>();
  for (const r of await knex("model_files").select("storage_key as key", "key_id", "wrapped_key")) refs.set(r.key, { keyId: r.key_id, wrapped: r.wrapped_key });
  for (const r of await knex("backups").select("storage_key as key", "key_id", "wrapped_key")) refs.set(r.key, { keyId: r.key_id, wrapped: r.wrapped_key });
  for (const r of await knex("voice_model_consents").whereNotNull("recording_key").select("recording_key as key", "recording_key_id as key_id", "recording_wrapped_key as wrapped_key")) {
    refs.set(r.key, { keyId: r.key_id, wrapped: r.wrapped_key });
  }
  const root = path.join(dataDir, "blobs");
  const out = new Map<string, Buffer>();
  for (const file of listFiles(root)) {
    const key = path.relative(root, file).split(path.sep).join("/");
    const ref = refs.get(key);
    if (!ref) throw new Error(`object ${key} is named by no row`);
    const parts: Buffer[] = [];
    for await (const chunk of await sealed.read({ key, keyId: ref.keyId, wrapped: Buffer.from(ref.wrapped) })) parts.push(chunk);
    out.set(key, Buffer.concat(parts));
  }
  return out;
}

/** Every text, character, jsonb and array column of every table holding any of the needles, as "table.column: needle". */
async function columnsHolding(knex: TestServer["db"]["knex"], needles: string[]): Promise<string[]> {
  const { rows } = await knex.raw(
    `SELECT table_name, column_name FROM information_schema.columns
     WHERE table_schema = current_schema() AND data_type IN ('text', 'character varying', 'character', 'jsonb', 'json', 'ARRAY')`,
  );
  const found: string[] = [];
  for (const { table_name: table, column_name: column } of rows as Array<{ table_name: string; column_name: string }>) {
    for (const needle of needles) {
      const hit = await knex.raw(`SELECT 1 FROM "${table}" WHERE "${column}"::text LIKE ? LIMIT 1`, [`%${needle}%`]);
      if (hit.rows.length > 0) found.push(`${table}.${column}: ${needle}`);
    }
  }
  return found;
}

describe("RevokeConsent", () => {
  test("deletes the model for good, activates the next best, and leaves no trace of it but ids", async () => {
    const gus = await server().actor();
    const friend = await server().actor();
    const service = await server().serviceActor();
    const tag = randomBytes(6).toString("hex");
    const secret = `meta-value-${tag}`;
    const doomed = await createModel(gus, { qualityScore: 0.9, metadata: { voiceName: secret }, trainingJobId: `job-${tag}` });
    const bytes = randomBytes(40_000);
    await ok(server(), "grpc", "uploadModelFile", [{ part: { case: "header", value: { modelId: doomed.id } } }, { part: { case: "chunk", value: bytes } }], gus);
    // A backup that holds only the model, then one that holds it and others.
    const backupOf = async () => {
      const progress = await ok(server(), "grpc", "createBackup", { includeDeleted: true }, gus);
      return progress[progress.length - 1].backup as { backupId: string; backupPath: string };
    };
    const onlyIt = await backupOf();
    const next = await createModel(gus, { qualityScore: 0.6 });
    const child = await createModel(gus, { qualityScore: 0.2, parentModelId: doomed.id });
    const nextBytes = randomBytes(30_000);
    await ok(server(), "grpc", "uploadModelFile", [{ part: { case: "header", value: { modelId: next.id } } }, { part: { case: "chunk", value: nextBytes } }], gus);
    const { createHash } = await import("node:crypto");
    const fileSha = createHash("sha256").update(bytes).digest("hex");
    const withOthers = await backupOf();
    await gus.grpc.shareVoiceModel({ modelId: doomed.id, targetUserIds: [friend.userId], permissions: ["view", "use"] });
    expect((await friend.grpc.listSharedVoiceModels({})).message.sharedModels).toHaveLength(1);
    await service.grpc.recordUsage({ modelId: doomed.id, userId: gus.userId, characters: 10n, latencyMs: 5, cost: 0, idempotencyKey: `u-${tag}` });
    await gus.grpc.activateVoiceModel({ modelId: next.id });
    await gus.grpc.activateVoiceModel({ modelId: doomed.id });
    const oldEntry = (await gus.grpc.listActivationHistory({})).message.entries[0];
    const speaker = `Speaker ${tag}`;
    const statement = `statement ${tag}: I agree`;
    const consent = (
      await ok(server(), "grpc", "recordConsent", consentRequest({ modelId: doomed.id }, { speaker: { kind: "other", name: speaker }, statementText: statement }), gus)
    ).consent;
    await ok(server(), "grpc", "uploadConsentRecording", upload(consent.id, randomBytes(80_000)), gus);

    // The scan sees them before.
    expect([...(await plaintexts(server().db.knex)).values()].some((plain) => plain.includes(bytes.subarray(5_000, 5_064)))).toBe(true);
    expect(await columnsHolding(server().db.knex, [secret, speaker])).toEqual(expect.arrayContaining([`voice_models.metadata: ${secret}`, `voice_model_consents.speaker_name: ${speaker}`]));

    const reply = await ok(server(), "connect", "revokeConsent", { consentId: consent.id }, gus);
    expect(reply).toMatchObject({
      consentId: consent.id,
      deletedModelId: doomed.id,
      activeModelId: next.id,
      rewrittenBackupIds: [withOthers.backupId],
      deletedBackupIds: [onlyIt.backupId],
    });

    const audited = await server().db.knex("audit_events").where({ action: "consent.revoked", actor_id: gus.userId }).select("target_user_id", "details");
    expect(audited).toEqual([{ target_user_id: gus.userId, details: { consentId: consent.id, modelDeleted: true } }]);

    // The scan: object keys, every object decrypted, every text and jsonb column.
    const needles = [doomed.id, fileSha, secret, speaker, statement];
    const objects = await plaintexts(server().db.knex);
    const probe = bytes.subarray(5_000, 5_064);
    const inObjects = [...objects].flatMap(([key, plain]) => [
      ...needles.filter((n) => key.includes(n) || plain.includes(n)).map((n) => `${key}: ${n}`),
      ...(plain.includes(probe) ? [`${key}: file bytes`] : []),
    ]);
    expect(inObjects).toEqual([]);
    expect((await columnsHolding(server().db.knex, needles)).filter((hit) => !hit.startsWith("revoked_voice_models."))).toEqual([]);

    // The model is gone everywhere; the next best took over with a history entry that names none before it.
    const history = (await gus.grpc.listActivationHistory({})).message.entries;
    expect(history[0]).toMatchObject({ newModelId: next.id, reason: "model_deleted" });
    expect(history[0].previousModelId).toBeUndefined();
    expect(history.filter((e) => e.previousModelId === doomed.id || e.newModelId === doomed.id)).toEqual([]);
    for (const transport of TRANSPORTS) {
      for (const [method, request] of [
        ["getVoiceModel", { modelId: doomed.id }],
        ["undeleteVoiceModel", { modelId: doomed.id }],
      ] as const) {
        expectRpcError(await server().call(transport, method, request, gus.token), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: doomed.id });
      }
      expectRpcError(await server().call(transport, "rollbackActiveModel", { historyEntryId: oldEntry.id }, gus.token), { code: Code.NotFound, reason: "HISTORY_ENTRY_NOT_FOUND" });
      expectRpcError(await server().call(transport, "getConsent", { consentId: consent.id }, gus.token), { code: Code.NotFound, reason: "CONSENT_NOT_FOUND" });
    }
    expect((await friend.grpc.listSharedVoiceModels({})).message.sharedModels).toEqual([]);
    const events = await server().db.knex("voice_model_events").where({ model_id: doomed.id }).select("type", "model");
    expect(events.map((e: { type: string }) => e.type)).toEqual(expect.arrayContaining(["created", "share_revoked", "purged"]));
    expect(events.filter((e: { model: unknown }) => e.model !== null)).toEqual([]);
    expect((await gus.grpc.getVoiceModel({ modelId: child.id })).message.model!.parentModelId).toBeUndefined();

    // The rewritten backup restores (by its old path) the others, with their files, and never the model.
    await gus.grpc.deleteVoiceModel({ modelId: next.id });
    const restored = await ok(server(), "connect", "restoreBackup", { backupPath: withOthers.backupPath, overwriteExisting: true }, gus);
    expect(restored).toMatchObject({ overwritten: 2 });
    const file = await ok(server(), "grpc", "readModelFile", { modelId: next.id }, gus);
    expect(Buffer.concat(file.map((m: { chunk: Uint8Array }) => m.chunk)).equals(nextBytes)).toBe(true);
    expect((await gus.grpc.listVoiceModels({ showDeleted: true })).message.models.map((m) => m.id).sort()).toEqual([next.id, child.id].sort());
    expectRpcError(await server().call("grpc", "restoreBackup", { backupPath: onlyIt.backupPath }, gus.token), { code: Code.NotFound, reason: "BACKUP_NOT_FOUND" });
  });

  test("a backup waiting for its rewrite can be neither downloaded nor restored", async () => {
    const hal = await server().actor();
    await createModel(hal);
    const progress = await ok(server(), "grpc", "createBackup", {}, hal);
    const backup = progress[progress.length - 1].backup;
    // As a withdrawal leaves it when the rewrite could not run yet.
    const knex = server().db.knex;
    await knex("backup_rewrites").insert({ backup_id: backup.backupId, model_id: "00000000-0000-4000-8000-000000000001" });
    const pending = { code: Code.FailedPrecondition, reason: "BACKUP_REWRITE_PENDING" };
    for (const transport of TRANSPORTS) expectRpcError(await server().call(transport, "restoreBackup", { backupPath: backup.backupPath }, hal.token), pending);
    const download = await server().fetch(`/v1/backups/${backup.backupId}`, { token: hal.token });
    expect({ status: download.status, reason: (download.body as { details?: Array<{ debug?: { reason?: string } }> })?.details?.[0]?.debug?.reason }).toEqual({
      status: 400,
      reason: "BACKUP_REWRITE_PENDING",
    });
    // The next withdrawal's rewrite run finds the model absent and unblocks it.
    const model = await createModel(hal);
    const consent = (await ok(server(), "grpc", "recordConsent", consentRequest({ modelId: model.id }), hal)).consent;
    expect(await ok(server(), "grpc", "revokeConsent", { consentId: consent.id }, hal)).toMatchObject({ rewrittenBackupIds: [], deletedBackupIds: [] });
    expect((await server().fetch(`/v1/backups/${backup.backupId}`, { token: hal.token })).status).toBe(200);
  });

  test("DeleteUserData erases the user's consent records and recordings with the rest", async () => {
    const jo = await server().actor();
    const admin = await server().adminActor();
    const model = await createModel(jo);
    const consent = (await ok(server(), "grpc", "recordConsent", consentRequest({ modelId: model.id }), jo)).consent;
    await ok(server(), "grpc", "uploadConsentRecording", upload(consent.id, randomBytes(75_000)), jo);
    const knex = server().db.knex;
    const key = (await knex("voice_model_consents").where({ id: consent.id }).first("recording_key")).recording_key as string;
    expect(fs.existsSync(path.join(dataDir, "blobs", key))).toBe(true);
    await ok(server(), "grpc", "deleteUserData", { userId: jo.userId }, admin);
    expect(Number((await knex("voice_model_consents").where({ user_id: jo.userId }).count("* as n").first())!.n)).toBe(0);
    expect(fs.existsSync(path.join(dataDir, "blobs", key))).toBe(false);
  });
});
