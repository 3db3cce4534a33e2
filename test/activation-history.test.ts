// The activation history: one row per change of a user's active model, written in the change's
// transaction; ListActivationHistory pages it; RollbackActiveModel walks it back like undo.
import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import type { ActivationHistoryEntry } from "../gen/voicemodel/v1/activation_history_pb";
import { openDatabase, type Database } from "../src/db/connection";
import { migrateToLatest } from "../src/db/migrate";
import { migrationSource } from "../src/db/migrations";
import { PageTokens } from "../src/paging/page-token";
import { NO_SHARES, SharedAccess } from "../src/voice-models/access";
import type { Actor as ChangeActor } from "../src/voice-models/model-events";
import * as repo from "../src/voice-models/repository";
import { VoiceModelService } from "../src/voice-models/voice-model-service";
import { createPostgresDatabase } from "./helpers/database";
import { TEST_DB } from "./helpers/env";
import { expectRpcError } from "./helpers/expect-error";
import { activeId, createModel, startTestServer, TRANSPORTS, uniqueUser, useTestServer, type Actor, type TestServer } from "./helpers/harness";

const server = useTestServer();

/** The user's whole history, newest first (as the owner sees it). */
async function historyOf(actor: Actor, userId?: string): Promise<ActivationHistoryEntry[]> {
  return (await actor.grpc.listActivationHistory({ userId, limit: 100 })).message.entries;
}

/** The history as (previous, new, reason) triples, oldest first. */
async function changes(actor: Actor, userId?: string) {
  return (await historyOf(actor, userId)).reverse().map((e) => [e.previousModelId, e.newModelId, e.reason]);
}

async function rollback(actor: Actor, request: object = {}) {
  const outcome = await server().call("grpc", "rollbackActiveModel", request, actor.token);
  if (outcome.code !== 0) throw new Error(`rollback failed: ${outcome.errorInfo?.reason} ${outcome.errorMessage}`);
  return outcome.message as { model: { id: string; isActive: boolean }; entry: ActivationHistoryEntry };
}

const u = undefined;

describe("a history row for every change of the active model", () => {
  test("first model, high-quality creation, manual activate and deactivate; with actor, request id and time", async () => {
    const alice = await server().actor();
    const started = Date.now();
    const created = await server().call("grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "a.pth", qualityScore: 0.3 }, alice.token, {
      "x-request-id": "history-req-1",
    });
    const a = created.message.model;
    const b = await createModel(alice, { qualityScore: 0.9 });
    const c = await createModel(alice, { qualityScore: 0.5 }); // no takeover: no row
    await alice.grpc.activateVoiceModel({ modelId: c.id });
    await alice.grpc.deactivateVoiceModel({ modelId: c.id });
    await alice.grpc.deactivateVoiceModel({ modelId: c.id }); // already inactive: no row
    expect(await changes(alice)).toEqual([
      [u, a.id, "first_model"],
      [a.id, b.id, "high_quality"],
      [b.id, c.id, "activated"],
      [c.id, u, "deactivated"],
    ]);
    const [first] = (await historyOf(alice)).reverse();
    expect(first).toMatchObject({ userId: alice.userId, actorId: alice.userId, requestId: "history-req-1" });
    expect(first.id).toMatch(/^[0-9a-f-]{36}$/);
    const at = Number(first.createdAt!.seconds) * 1000;
    expect(at).toBeGreaterThanOrEqual(Math.floor(started / 1000) * 1000);
    expect(at).toBeLessThanOrEqual(Date.now());
  });

  test("a model updated to completed, and the active model leaving completed: the service is the actor", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const pending = await createModel(training, { userId, status: "pending", qualityScore: 0.4 });
    const other = await createModel(training, { userId, status: "pending", qualityScore: 0.3 });
    await training.grpc.updateVoiceModel({ modelId: other.id, status: "completed" }); // first: active
    await training.grpc.updateVoiceModel({ modelId: pending.id, status: "completed" }); // 0.4: no takeover
    await training.grpc.updateVoiceModel({ modelId: other.id, status: "failed" }); // next best takes over
    await training.grpc.updateVoiceModel({ modelId: pending.id, status: "failed" }); // none left
    expect(await changes(training, userId)).toEqual([
      [u, other.id, "first_model"],
      [other.id, pending.id, "model_not_completed"],
      [pending.id, u, "model_not_completed"],
    ]);
    expect((await historyOf(training, userId)).every((e) => e.actorId === training.userId)).toBe(true);
  });

  test("next best on delete, SelectBestVoiceModel's activate", async () => {
    const alice = await server().actor();
    const a = await createModel(alice, { qualityScore: 0.2 });
    const b = await createModel(alice, { qualityScore: 0.6 });
    await alice.grpc.selectBestVoiceModel({ activate: true });
    await alice.grpc.deleteVoiceModel({ modelId: b.id });
    await alice.grpc.deleteVoiceModel({ modelId: a.id });
    expect(await changes(alice)).toEqual([
      [u, a.id, "first_model"],
      [a.id, b.id, "selected"],
      [b.id, a.id, "model_deleted"],
      [a.id, u, "model_deleted"],
    ]);
  });

  test("a restore that changes the active model: one row", async () => {
    const alice = await server().actor();
    const a = await createModel(alice, { qualityScore: 0.5 });
    const made = await server().call("grpc", "createBackup", {}, alice.token);
    expect(made.code).toBe(0);
    const backupPath = (made.message as Array<{ backup?: { backupPath: string } }>).pop()!.backup!.backupPath;
    const b = await createModel(alice, { qualityScore: 0.9 });
    const restored = await server().call("grpc", "restoreBackup", { backupPath, overwriteExisting: true, activateRestored: true }, alice.token);
    expect(restored.code).toBe(0);
    expect(restored.message.activeModelId).toBe(a.id);
    expect(await changes(alice)).toEqual([
      [u, a.id, "first_model"],
      [a.id, b.id, "high_quality"],
      [b.id, a.id, "restored"],
    ]);
  });

  test("a restore that overwrites the active model with a version that is not completed: one row to none", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const a = await createModel(training, { userId, status: "pending" });
    const made = await server().call("grpc", "createBackup", { userId }, training.token);
    const backupPath = (made.message as Array<{ backup?: { backupPath: string } }>).pop()!.backup!.backupPath;
    await training.grpc.updateVoiceModel({ modelId: a.id, status: "completed" });
    const restored = await server().call("grpc", "restoreBackup", { userId, backupPath, overwriteExisting: true }, training.token);
    expect(restored.code).toBe(0);
    expect(restored.message.activeModelId).toBeUndefined();
    expect(await changes(training, userId)).toEqual([
      [u, a.id, "first_model"],
      [a.id, u, "restored"],
    ]);
  });

  test("DeleteUserData erases the user's history in its transaction; others keep theirs", async () => {
    const admin = await server().adminActor();
    const alice = await server().actor();
    const bob = await server().actor();
    await createModel(alice);
    await createModel(bob);
    expect(await historyOf(alice)).toHaveLength(1);
    const erased = await server().call("grpc", "deleteUserData", { userId: alice.userId }, admin.token);
    expect(erased.code).toBe(0);
    // Naming an erased user is refused (a read would fill caches with the id again).
    expect((await server().call("grpc", "listActivationHistory", { userId: alice.userId }, admin.token)).code).toBe(Code.InvalidArgument);
    expect(await server().db.knex("activation_history").where({ user_id: alice.userId }).first()).toBeUndefined();
    expect(await historyOf(bob)).toHaveLength(1);
  });
});

describe("RollbackActiveModel", () => {
  /** A user who activated a, then b, then c (three rows after the first). */
  async function threeChanges() {
    const alice = await server().actor();
    const a = await createModel(alice, { qualityScore: 0.3 });
    const b = await createModel(alice, { qualityScore: 0.85 });
    const c = await createModel(alice, { qualityScore: 0.95 });
    return { alice, a, b, c };
  }

  test("repeated rollbacks go further back (no toggling), each a rollback row naming the entry it undid", async () => {
    const { alice, a, b, c } = await threeChanges();
    const [toC, toB] = await historyOf(alice);
    const first = await rollback(alice);
    expect(first.model).toMatchObject({ id: b.id, isActive: true });
    expect(first.entry).toMatchObject({ previousModelId: c.id, newModelId: b.id, reason: "rollback", undoneEntryId: toC.id, actorId: alice.userId });
    const second = await rollback(alice);
    expect(second.model.id).toBe(a.id);
    expect(second.entry).toMatchObject({ previousModelId: b.id, newModelId: a.id, undoneEntryId: toB.id });
    expect(await activeId(alice)).toBe(a.id);
    // a was the first model: nothing was active before it.
    expectRpcError(await server().call("grpc", "rollbackActiveModel", {}, alice.token), { code: Code.FailedPrecondition, reason: "NOTHING_TO_ROLL_BACK" });
    expect(await activeId(alice)).toBe(a.id);
    expect((await historyOf(alice))[0]).toMatchObject({ id: second.entry.id });
  });

  test("a change after a rollback is undone first, then the walk continues before what the rollback undid", async () => {
    const { alice, a, b, c } = await threeChanges();
    await rollback(alice); // c -> b
    await alice.grpc.activateVoiceModel({ modelId: c.id }); // b -> c
    expect((await rollback(alice)).model.id).toBe(b.id); // undoes the activate
    expect((await rollback(alice)).model.id).toBe(a.id); // before the change the first rollback undid
  });

  test("with nothing active it restores the last model that was active", async () => {
    const alice = await server().actor();
    await createModel(alice, { qualityScore: 0.3 });
    const b = await createModel(alice, { qualityScore: 0.9 });
    await alice.grpc.deactivateVoiceModel({ modelId: b.id });
    expect(await activeId(alice)).toBeUndefined();
    const back = await rollback(alice, { expectedActiveModelId: "" });
    expect(back.model.id).toBe(b.id);
    expect(back.entry).toMatchObject({ newModelId: b.id, reason: "rollback" });
    expect(back.entry.previousModelId).toBeUndefined();
  });

  test("to a given entry: the model that entry made active; the next rollback continues before it", async () => {
    const { alice, a, b, c } = await threeChanges();
    const d = await createModel(alice, { qualityScore: 0.99 });
    const entries = await historyOf(alice);
    const toB = entries.find((e) => e.newModelId === b.id)!;
    const toC = entries.find((e) => e.newModelId === c.id)!;
    const back = await rollback(alice, { historyEntryId: toB.id });
    expect(back.model.id).toBe(b.id);
    expect(back.entry).toMatchObject({ previousModelId: d.id, newModelId: b.id, undoneEntryId: toC.id });
    expect((await rollback(alice)).model.id).toBe(a.id);
    // An entry whose model is the active one, one that made none active, another user's or none at all.
    const current = (await historyOf(alice))[0];
    expectRpcError(await server().call("grpc", "rollbackActiveModel", { historyEntryId: current.id }, alice.token), {
      code: Code.AlreadyExists,
      reason: "ALREADY_ACTIVE",
      modelId: a.id,
    });
    await alice.grpc.deactivateVoiceModel({ modelId: a.id });
    const toNone = (await historyOf(alice))[0];
    expectRpcError(await server().call("grpc", "rollbackActiveModel", { historyEntryId: toNone.id }, alice.token), {
      code: Code.FailedPrecondition,
      reason: "NOTHING_TO_ROLL_BACK",
      field: "historyEntryId",
    });
    const bob = await server().actor();
    for (const historyEntryId of [toB.id, randomUUID()]) {
      expectRpcError(await server().call("grpc", "rollbackActiveModel", { historyEntryId }, bob.token), {
        code: Code.NotFound,
        reason: "HISTORY_ENTRY_NOT_FOUND",
        field: "historyEntryId",
      });
    }
  });

  test("a deleted target is ROLLBACK_TARGET_DELETED (pointing at UndeleteVoiceModel); a failed one MODEL_NOT_COMPLETED", async () => {
    const alice = await server().actor();
    const a = await createModel(alice, { qualityScore: 0.3 });
    const b = await createModel(alice, { qualityScore: 0.9 });
    await alice.grpc.deleteVoiceModel({ modelId: a.id });
    const before = await historyOf(alice);
    expectRpcError(await server().call("grpc", "rollbackActiveModel", {}, alice.token), {
      code: Code.FailedPrecondition,
      reason: "ROLLBACK_TARGET_DELETED",
      modelId: a.id,
      message: /UndeleteVoiceModel/,
    });
    await alice.grpc.undeleteVoiceModel({ modelId: a.id });
    const training = await server().serviceActor();
    await training.grpc.updateVoiceModel({ modelId: a.id, status: "failed" });
    expectRpcError(await server().call("grpc", "rollbackActiveModel", {}, alice.token), {
      code: Code.FailedPrecondition,
      reason: "MODEL_NOT_COMPLETED",
      modelId: a.id,
    });
    expect(await activeId(alice)).toBe(b.id);
    expect(await historyOf(alice)).toEqual(before);
  });

  test("a user with no earlier model: NOTHING_TO_ROLL_BACK; a wrong expected model: ABORTED ACTIVE_MODEL_CHANGED", async () => {
    const alice = await server().actor();
    expectRpcError(await server().call("connect", "rollbackActiveModel", {}, alice.token), { code: Code.FailedPrecondition, reason: "NOTHING_TO_ROLL_BACK" });
    const a = await createModel(alice, { qualityScore: 0.3 });
    await createModel(alice, { qualityScore: 0.9 });
    for (const expectedActiveModelId of [a.id, ""]) {
      expectRpcError(await server().call("connect", "rollbackActiveModel", { expectedActiveModelId }, alice.token), {
        code: Code.Aborted,
        reason: "ACTIVE_MODEL_CHANGED",
        field: "expectedActiveModelId",
      });
    }
    expect(await historyOf(alice)).toHaveLength(2);
  });

  test.each(TRANSPORTS)("racing rollbacks with the same expected model over %s: exactly one wins, the others ABORTED", async (transport) => {
    const { alice, b, c } = await threeChanges();
    const outcomes = await Promise.all(
      Array.from({ length: 6 }, () => server().call(transport, "rollbackActiveModel", { expectedActiveModelId: c.id }, alice.token)),
    );
    const won = outcomes.filter((o) => o.code === 0);
    expect(won).toHaveLength(1);
    expect(won[0].message.model.id).toBe(b.id);
    for (const lost of outcomes.filter((o) => o.code !== 0)) expectRpcError(lost, { code: Code.Aborted, reason: "ACTIVE_MODEL_CHANGED" });
    expect(await activeId(alice)).toBe(b.id);
    expect((await historyOf(alice)).filter((e) => e.reason === "rollback")).toHaveLength(1);
  });

  test("a rollback goes through the change listeners: the cached active model and the audit log see it", async () => {
    const { alice, b, c } = await threeChanges();
    expect(await activeId(alice)).toBe(c.id); // now cached
    await rollback(alice);
    expect(await activeId(alice)).toBe(b.id);
    const { message } = await alice.grpc.listAuditEvents({ userId: alice.userId, limit: 10 });
    expect(message.events[0]).toMatchObject({ action: "model.activated", modelId: b.id });
  });

  test("service and admin callers roll back any user's model and must name the user", async () => {
    const { alice, b } = await threeChanges();
    const admin = await server().adminActor();
    const back = await admin.grpc.rollbackActiveModel({ userId: alice.userId });
    expect(back.message.model!.id).toBe(b.id);
    expect(back.message.entry!.actorId).toBe(admin.userId);
  });
});

describe("the purged target", () => {
  let purging: TestServer;
  beforeAll(async () => {
    purging = await startTestServer({ env: { DELETED_RETENTION_DAYS: "0", FILE_PURGE_INTERVAL_MS: "200" } });
  });
  afterAll(() => purging?.close());

  test("a model purged after its delete is ROLLBACK_TARGET_GONE", async () => {
    const alice = await purging.actor();
    const a = await createModel(alice, { qualityScore: 0.3 });
    await createModel(alice, { qualityScore: 0.9 });
    await alice.grpc.deleteVoiceModel({ modelId: a.id });
    const deadline = Date.now() + 15_000;
    while (await purging.db.knex("voice_models").where({ id: a.id }).first()) {
      if (Date.now() > deadline) throw new Error("the deleted model was not purged");
      await new Promise((resolve) => setImmediate(resolve));
    }
    expectRpcError(await purging.call("grpc", "rollbackActiveModel", {}, alice.token), {
      code: Code.FailedPrecondition,
      reason: "ROLLBACK_TARGET_GONE",
      modelId: a.id,
    });
  });
});

describe("ListActivationHistory", () => {
  test("pages newest first with signed tokens that open only for the same caller and user", async () => {
    const alice = await server().actor();
    const models = [];
    for (let i = 0; i < 4; i++) models.push(await createModel(alice, { qualityScore: 0.5 }));
    for (const m of models) await alice.grpc.activateVoiceModel({ modelId: m.id }).catch(() => undefined);
    await alice.grpc.deactivateVoiceModel({ modelId: models[3].id });
    const all = await historyOf(alice);
    expect(all.length).toBe(5);
    for (const transport of TRANSPORTS) {
      const seen: string[] = [];
      let pageToken: string | undefined;
      do {
        const page = await server().call(transport, "listActivationHistory", { limit: 2, pageToken }, alice.token);
        expect(page.code).toBe(0);
        seen.push(...page.message.entries.map((e: ActivationHistoryEntry) => e.id));
        pageToken = page.message.nextPageToken || undefined;
      } while (pageToken);
      expect(seen).toEqual(all.map((e) => e.id));
    }
    const { message } = await alice.grpc.listActivationHistory({ limit: 2 });
    const admin = await server().adminActor();
    const refused = await server().call("grpc", "listActivationHistory", { userId: alice.userId, pageToken: message.nextPageToken }, admin.token);
    expectRpcError(refused, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "pageToken" });
    expect((await historyOf(admin, alice.userId)).map((e) => e.id)).toEqual(all.map((e) => e.id));
  });

  test("another user's history is PERMISSION_DENIED", async () => {
    const alice = await server().actor();
    const bob = await server().actor();
    await createModel(alice);
    for (const transport of TRANSPORTS) {
      for (const method of ["listActivationHistory", "rollbackActiveModel"] as const) {
        expectRpcError(await server().call(transport, method, { userId: alice.userId }, bob.token), {
          code: Code.PermissionDenied,
          reason: "ACCESS_DENIED",
          field: "userId",
        });
      }
    }
  });
});

describe(`migration 005 on ${TEST_DB}`, () => {
  let database: Database;
  let drop: (() => Promise<void>) | undefined;
  afterAll(async () => {
    await database?.close();
    await drop?.();
  });

  test("writes one 'migrated' row per user's active model, and rollback then works for them", async () => {
    if (TEST_DB === "pglite") database = await openDatabase({});
    else {
      const created = await createPostgresDatabase();
      drop = created.drop;
      database = await openDatabase({ url: created.url, poolMax: 5 });
    }
    const knex = database.knex;
    const names = await migrationSource.getMigrations([]);
    for (const name of names.slice(0, names.indexOf("004-governance") + 1)) await knex.migrate.up({ migrationSource, name });
    expect(await knex.schema.hasTable("activation_history")).toBe(false);
    const [alice, bob, carol] = [uniqueUser(), uniqueUser(), uniqueUser()];
    const row = (user: string, fields: object) => ({ id: randomUUID(), user_id: user, provider: "xtts-v2", model_path: `${randomUUID()}.pth`, ...fields });
    const aliceOld = row(alice, { is_active: false, quality_score: 0.4 });
    const aliceActive = row(alice, { is_active: true, quality_score: 0.6 });
    const bobActive = row(bob, { is_active: true });
    await knex("model_owners").insert([alice, bob, carol].map((user_id) => ({ user_id })));
    await knex("voice_models").insert([aliceOld, aliceActive, bobActive, row(carol, { is_active: false })]);

    await migrateToLatest(knex);
    const rows = await knex("activation_history").whereIn("user_id", [alice, bob, carol]).orderBy("user_id");
    const of = (user: string) => rows.filter((r) => r.user_id === user).map((r) => [r.previous_model_id, r.new_model_id, r.reason, r.actor_id]);
    expect(of(alice)).toEqual([[null, aliceActive.id, "migrated", "migration"]]);
    expect(of(bob)).toEqual([[null, bobActive.id, "migrated", "migration"]]);
    expect(of(carol)).toEqual([]);

    const migrated = await startTestServer({ database });
    try {
      const user = await migrated.actor(alice);
      const [start] = await historyOf(user);
      expect(start).toMatchObject({ reason: "migrated", newModelId: aliceActive.id });
      expect(start.previousModelId).toBeUndefined();
      await user.grpc.activateVoiceModel({ modelId: aliceOld.id });
      const { message } = await user.grpc.rollbackActiveModel({ expectedActiveModelId: aliceOld.id });
      expect(message.model!.id).toBe(aliceActive.id);
      // Back to the migrated entry's model from none.
      await user.grpc.deactivateVoiceModel({ modelId: aliceActive.id });
      const migratedEntry = (await historyOf(user)).find((e) => e.reason === "migrated")!;
      expect((await user.grpc.rollbackActiveModel({ historyEntryId: migratedEntry.id })).message.model!.id).toBe(aliceActive.id);
    } finally {
      await migrated.close();
    }
  });
});

// No RPC can provoke the guard (every write records its change): this drives the service's write
// directly, on the test server's database, as a future write that forgot the history would.
describe("the history guard", () => {
  const models = () =>
    new VoiceModelService(server().db.knex, {
      pageTokens: new PageTokens(() => [Buffer.alloc(32, 7)]),
      reads: { model: (_id, load) => load(), active: (_id, load) => load(), list: (_id, _key, load) => load() },
      access: new SharedAccess(NO_SHARES),
    });

  test.each([
    ["a deactivation", { isActive: false }, "deactivated"],
    ["a soft delete of the active model", { isActive: false, deletedAt: new Date() }, "deleted"],
    ["a change recorded as a plain update", { isActive: false }, "updated"],
  ] as const)("%s with no history record is INTERNAL and changes nothing", async (_name, patch, kind) => {
    const alice = await server().actor();
    const a = await createModel(alice);
    const actor = { caller: { userId: alice.userId, roles: ["user"], privileged: false }, requestId: "guard", clientAddress: "127.0.0.1" } as unknown as ChangeActor;
    const write = models().write(actor, async (trx, log) => {
      await repo.lockOwner(trx, alice.userId);
      return repo.patchModel(trx, log, a.id, patch, kind);
    });
    await expect(write).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringContaining(a.id) });
    expect(await activeId(alice)).toBe(a.id);
    expect(await historyOf(alice)).toHaveLength(1);
  });

  test("an activation with no history record is INTERNAL", async () => {
    const alice = await server().actor();
    const a = await createModel(alice);
    const b = await createModel(alice, { qualityScore: 0.1 });
    const actor = { caller: { userId: alice.userId, roles: ["user"], privileged: false }, requestId: "guard", clientAddress: "127.0.0.1" } as unknown as ChangeActor;
    const write = models().write(actor, async (trx, log) => {
      await repo.lockOwner(trx, alice.userId);
      await repo.patchModel(trx, log, a.id, { isActive: false });
      log.activationChanged({ userId: alice.userId, fromModelId: a.id, toModelId: undefined, reason: "deactivated" });
      return repo.patchModel(trx, log, b.id, { isActive: true });
    });
    await expect(write).rejects.toMatchObject({ code: "INTERNAL", message: expect.stringContaining(b.id) });
    expect(await activeId(alice)).toBe(a.id);
  });
});
