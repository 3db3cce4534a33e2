// Model lineage: per-user model numbers (never reused) and parent links, GetVoiceModelLineage,
// ListVoiceModels' lineage_of filter, and how restores and imports carry both.
import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { VoiceModel } from "../gen/voicemodel/v1/voice_model_pb";
import * as backupRows from "../src/backups/backup-repository";
import { parseConfig } from "../src/config";
import { masterKeySource, openBlobStore, openKeyProvider } from "../src/storage/open-storage";
import { SealedStore } from "../src/storage/sealed-store";
import { expectRpcError } from "./helpers/expect-error";
import { JWT_SECRET } from "./helpers/env";
import { modelInput, sleep, TRANSPORTS, useTestServer, type Actor, type MethodName, type RpcOutcome, type Transport } from "./helpers/harness";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-lineage-"));
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));
// Purged at once only when a test backdates deleted_at past the retention period.
const server = useTestServer({ env: { DATA_DIR: dataDir, FILE_PURGE_INTERVAL_MS: "100" } });

/** Calls an RPC and returns its reply, failing the test on an error. */
async function ok(transport: Transport, method: MethodName, request: object | object[], actor: Pick<Actor, "token">): Promise<any> {
  const outcome = await server().call(transport, method, request, actor.token);
  if (outcome.code !== 0) throw new Error(`${method} failed: ${outcome.code} ${outcome.errorInfo?.reason} ${outcome.errorMessage}`);
  return outcome.message;
}

const refused = (transport: Transport, method: MethodName, request: object, actor: Pick<Actor, "token">): Promise<RpcOutcome> =>
  server().call(transport, method, request, actor.token);

async function create(transport: Transport, actor: Pick<Actor, "token">, fields: object = {}): Promise<VoiceModel> {
  return (await ok(transport, "createVoiceModel", modelInput({ qualityScore: 0.3, ...fields }), actor)).model;
}

const lineage = (transport: Transport, actor: Pick<Actor, "token">, modelId: string) => ok(transport, "getVoiceModelLineage", { modelId }, actor);

const ids = (models: VoiceModel[]) => models.map((m) => m.id);

/** Soft-deletes a model, backdates the delete past the retention period and waits for the purge. */
async function purge(transport: Transport, actor: Actor, modelId: string): Promise<void> {
  await ok(transport, "deleteVoiceModel", { modelId }, actor);
  const knex = server().db.knex;
  await knex("voice_models").where({ id: modelId }).update({ deleted_at: new Date(Date.now() - 40 * 86_400_000) });
  for (let i = 0; i < 400; i++) {
    if (!(await knex("voice_models").where({ id: modelId }).first("id"))) return;
    await sleep(25);
  }
  throw new Error(`model ${modelId} was not purged`);
}

/** Uploads a small file to a model (export needs one). */
async function upload(transport: Transport, actor: Actor, modelId: string): Promise<void> {
  await ok(transport, "uploadModelFile", [{ part: { case: "header", value: { modelId } } }, { part: { case: "chunk", value: new Uint8Array([7, 7, 7, randomUUID().length]) } }], actor);
}

describe.each(TRANSPORTS)("over %s", (transport) => {
  describe("model numbers", () => {
    test("1, 2, 3 per user, never reused after deletes and purges; each user counts alone", async () => {
      const alice = await server().actor();
      const bob = await server().actor();
      const [a1, a2, a3] = [await create(transport, alice), await create(transport, alice), await create(transport, alice)];
      expect([a1.modelNumber, a2.modelNumber, a3.modelNumber]).toEqual([1, 2, 3]);
      expect((await create(transport, bob)).modelNumber).toBe(1);
      // The edit counter is separate: an update changes the etag, not the number.
      const updated = (await ok(transport, "updateVoiceModel", { modelId: a2.id, qualityScore: 0.5 }, alice)).model;
      expect({ number: updated.modelNumber, etagChanged: updated.etag !== a2.etag }).toEqual({ number: 2, etagChanged: true });

      await ok(transport, "deleteVoiceModel", { modelId: a3.id }, alice);
      const a4 = await create(transport, alice);
      expect(a4.modelNumber).toBe(4);
      await purge(transport, alice, a4.id);
      expect((await create(transport, alice)).modelNumber).toBe(5);
      // Undelete keeps the number.
      const back = (await ok(transport, "undeleteVoiceModel", { modelId: a3.id }, alice)).model;
      expect(back.modelNumber).toBe(3);
      expect((await ok(transport, "getVoiceModel", { modelId: a1.id }, alice)).model.modelNumber).toBe(1);
      expect((await create(transport, alice)).modelNumber).toBe(6);
    });

    test("20 concurrent creates get 20 distinct consecutive numbers, refused creates take none", async () => {
      const carol = await server().actor();
      const training = await server().serviceActor();
      const created = await Promise.all(
        Array.from({ length: 20 }, (_, i) => create(transport, i % 2 ? carol : training, { userId: carol.userId, trainingJobId: i % 2 ? undefined : `job-${i}` })),
      );
      expect(created.map((m) => m.modelNumber).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
      // A retried training job returns the first model (and its number); a refused create uses none.
      expect((await create(transport, training, { userId: carol.userId, trainingJobId: "job-0" })).modelNumber).toBe(created[0].modelNumber);
      expect((await refused(transport, "createVoiceModel", modelInput({ parentModelId: randomUUID() }), carol)).code).toBe(Code.InvalidArgument);
      expect((await create(transport, carol)).modelNumber).toBe(21);
    });
  });

  describe("parent validation", () => {
    test("a parent of the same user, live or soft-deleted, is kept", async () => {
      const dora = await server().actor();
      const parent = await create(transport, dora);
      const child = await create(transport, dora, { parentModelId: parent.id });
      expect(child.parentModelId).toBe(parent.id);
      expect(parent.parentModelId).toBeUndefined();
      await ok(transport, "deleteVoiceModel", { modelId: parent.id }, dora);
      expect((await create(transport, dora, { parentModelId: parent.id.toUpperCase() })).parentModelId).toBe(parent.id);
      // A service creating for the user may name the user's model.
      const training = await server().serviceActor();
      expect((await create(transport, training, { userId: dora.userId, parentModelId: child.id })).parentModelId).toBe(child.id);
    });

    test("an unknown, purged or other user's model is INVALID_ARGUMENT naming parentModelId, alike, and nothing is created", async () => {
      const erin = await server().actor();
      const frank = await server().actor();
      const franks = await create(transport, frank);
      const gone = await create(transport, erin);
      await purge(transport, erin, gone.id);
      const training = await server().serviceActor();
      const attempts: Array<[Actor | Pick<Actor, "token">, string, object]> = [
        [erin, randomUUID(), {}],
        [erin, franks.id, {}],
        [erin, gone.id, {}],
        [training, franks.id, { userId: erin.userId }],
      ];
      const messages: string[] = [];
      for (const [caller, parentModelId, extra] of attempts) {
        const outcome = await refused(transport, "createVoiceModel", modelInput({ parentModelId, ...extra }), caller);
        expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "parentModelId" });
        expect(outcome.errorInfo!.metadata.modelId).toBeUndefined();
        messages.push(outcome.errorMessage!.replace(parentModelId, "<id>"));
      }
      // The same words for a model that does not exist and for another user's.
      expect(new Set(messages).size).toBe(1);
      expectRpcError(await refused(transport, "createVoiceModel", modelInput({ parentModelId: "not-a-uuid" }), erin), {
        code: Code.InvalidArgument,
        reason: "INVALID_ARGUMENT",
        field: "parentModelId",
      });
      const listed = await ok(transport, "listVoiceModels", { showDeleted: true }, erin);
      expect(listed.total).toBe(0);
      expect((await create(transport, erin)).modelNumber).toBe(2);
    });
  });

  describe("GetVoiceModelLineage", () => {
    // root(1) -> a(2) -> c(3) -> f(5);  root -> b(4);  a -> d(6, soft-deleted)
    let owner: Actor;
    let t: Record<"root" | "a" | "b" | "c" | "d" | "f", VoiceModel>;
    beforeAll(async () => {
      owner = await server().actor();
      const root = await create(transport, owner);
      const a = await create(transport, owner, { parentModelId: root.id });
      const c = await create(transport, owner, { parentModelId: a.id });
      const b = await create(transport, owner, { parentModelId: root.id });
      const f = await create(transport, owner, { parentModelId: c.id });
      const d = await create(transport, owner, { parentModelId: a.id });
      await ok(transport, "deleteVoiceModel", { modelId: d.id }, owner);
      t = { root, a, b, c, d, f };
    });

    test("ancestors root first; descendants breadth-first by generation, then model number; deleted ones marked", async () => {
      const fromRoot = await lineage(transport, owner, t.root.id);
      expect(fromRoot.model.id).toBe(t.root.id);
      expect(ids(fromRoot.ancestors)).toEqual([]);
      // Generation 1: a(2), b(4); generation 2: c(3), d(6); generation 3: f(5).
      expect(ids(fromRoot.descendants)).toEqual([t.a.id, t.b.id, t.c.id, t.d.id, t.f.id]);
      expect(fromRoot.descendants.map((m: VoiceModel) => m.deletedAt !== undefined)).toEqual([false, false, false, true, false]);
      expect(fromRoot.truncated).toBe(false);

      const fromF = await lineage(transport, owner, t.f.id);
      expect(ids(fromF.ancestors)).toEqual([t.root.id, t.a.id, t.c.id]);
      expect(ids(fromF.descendants)).toEqual([]);

      const fromA = await lineage(transport, owner, t.a.id);
      expect(ids(fromA.ancestors)).toEqual([t.root.id]);
      expect(ids(fromA.descendants)).toEqual([t.c.id, t.d.id, t.f.id]);
      // A soft-deleted model's own lineage.
      const fromD = await lineage(transport, owner, t.d.id);
      expect({ deleted: fromD.model.deletedAt !== undefined, ancestors: ids(fromD.ancestors) }).toEqual({ deleted: true, ancestors: [t.root.id, t.a.id] });
      // Service and admin callers see it too.
      expect(ids((await lineage(transport, await server().adminActor(), t.c.id)).ancestors)).toEqual([t.root.id, t.a.id]);
    });

    test("another user is PERMISSION_DENIED, an unknown model NOT_FOUND; a sharee sees only what is shared with them", async () => {
      const stranger = await server().actor();
      expectRpcError(await refused(transport, "getVoiceModelLineage", { modelId: t.a.id }, stranger), {
        code: Code.PermissionDenied,
        reason: "ACCESS_DENIED",
        modelId: t.a.id,
      });
      const unknown = randomUUID();
      expectRpcError(await refused(transport, "getVoiceModelLineage", { modelId: unknown }, owner), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND", modelId: unknown });
      await ok(transport, "shareVoiceModel", { modelId: t.a.id, targetUserIds: [stranger.userId], permissions: ["view"] }, owner);
      await ok(transport, "shareVoiceModel", { modelId: t.f.id, targetUserIds: [stranger.userId], permissions: ["view"] }, owner);
      const shared = await lineage(transport, stranger, t.a.id);
      expect({ model: shared.model.id, ancestors: ids(shared.ancestors), descendants: ids(shared.descendants) }).toEqual({ model: t.a.id, ancestors: [], descendants: [t.f.id] });
    });

    test("ListVoiceModels lineage_of: the model, its ancestors and descendants, paged, the other filters on top", async () => {
      const all = async (request: object, limit: number) => {
        const seen: VoiceModel[] = [];
        let pageToken: string | undefined;
        let total = -1;
        do {
          const page = await ok(transport, "listVoiceModels", { ...request, limit, pageToken }, owner);
          seen.push(...page.models);
          total = page.total;
          pageToken = page.nextPageToken || undefined;
        } while (pageToken);
        return { ids: ids(seen).sort(), total };
      };
      const sorted = (...models: VoiceModel[]) => ids(models).sort();
      expect(await all({ lineageOf: t.c.id }, 1)).toEqual({ ids: sorted(t.root, t.a, t.c, t.f), total: 4 });
      expect(await all({ lineageOf: t.b.id }, 2)).toEqual({ ids: sorted(t.root, t.b), total: 2 });
      expect(await all({ lineageOf: t.a.id }, 2)).toEqual({ ids: sorted(t.root, t.a, t.c, t.f), total: 4 });
      expect(await all({ lineageOf: t.a.id, showDeleted: true }, 2)).toEqual({ ids: sorted(t.root, t.a, t.c, t.d, t.f), total: 5 });
      expect(await all({ lineageOf: t.d.id, showDeleted: true }, 10)).toEqual({ ids: sorted(t.root, t.a, t.d), total: 3 });

      // The page token is bound to the filter: another lineage_of (or none) refuses it.
      const first = await ok(transport, "listVoiceModels", { lineageOf: t.c.id, limit: 1 }, owner);
      expect(first.nextPageToken).not.toBe("");
      for (const other of [{ lineageOf: t.b.id }, {}]) {
        expectRpcError(await refused(transport, "listVoiceModels", { ...other, limit: 1, pageToken: first.nextPageToken }, owner), {
          code: Code.InvalidArgument,
          reason: "INVALID_ARGUMENT",
          field: "pageToken",
        });
      }

      // Someone else's model or an unknown id: the same refusal naming lineageOf.
      const stranger = await server().actor();
      const messages: string[] = [];
      for (const lineageOf of [t.a.id, randomUUID()]) {
        const outcome = await refused(transport, "listVoiceModels", { lineageOf }, stranger);
        expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "lineageOf" });
        messages.push(outcome.errorMessage!.replace(lineageOf, "<id>"));
      }
      expect(messages[0]).toBe(messages[1]);
    });
  });

  test("purging a parent makes its children roots, also in cached reads", async () => {
    const gina = await server().actor();
    const parent = await create(transport, gina);
    const child = await create(transport, gina, { parentModelId: parent.id });
    const grandchild = await create(transport, gina, { parentModelId: child.id });
    expect((await ok(transport, "getVoiceModel", { modelId: child.id }, gina)).model.parentModelId).toBe(parent.id);
    await purge(transport, gina, parent.id);
    const after = (await ok(transport, "getVoiceModel", { modelId: child.id }, gina)).model;
    expect({ parent: after.parentModelId, number: after.modelNumber, etagChanged: after.etag !== child.etag }).toEqual({ parent: undefined, number: 2, etagChanged: true });
    expect(ids((await lineage(transport, gina, grandchild.id)).ancestors)).toEqual([child.id]);
  });

  test("a restore keeps its models' numbers and parents; the counter stays past them", async () => {
    const hana = await server().actor();
    const parent = await create(transport, hana);
    const child = await create(transport, hana, { parentModelId: parent.id });
    const other = await create(transport, hana);
    // The child sorts first in the backup, so its parent is restored after it.
    await server().db.knex.raw(`UPDATE voice_models SET created_at = (SELECT created_at FROM voice_models WHERE id = ?) - interval '1 minute' WHERE id = ?`, [parent.id, child.id]);
    const made = await ok(transport, "createBackup", { includeDeleted: true }, hana);
    const backupPath = made[made.length - 1].backup.backupPath;
    await purge(transport, hana, child.id);
    await purge(transport, hana, parent.id);
    expect((await create(transport, hana)).modelNumber).toBe(4);

    const result = await ok(transport, "restoreBackup", { backupPath }, hana);
    expect({ restored: result.restored, skipped: result.skipped }).toEqual({ restored: 2, skipped: 1 });
    const [p, c, o] = await Promise.all([parent, child, other].map(async (m) => (await ok(transport, "getVoiceModel", { modelId: m.id }, hana)).model));
    expect([p.modelNumber, c.modelNumber, o.modelNumber]).toEqual([1, 2, 3]);
    expect({ parent: p.parentModelId, child: c.parentModelId }).toEqual({ parent: undefined, child: parent.id });
    expect((await create(transport, hana)).modelNumber).toBe(5);

    // Overwriting keeps the number the model has and the parent the backup names.
    const over = await ok(transport, "restoreBackup", { backupPath, overwriteExisting: true }, hana);
    expect(over.overwritten).toBe(3);
    const again = (await ok(transport, "getVoiceModel", { modelId: child.id }, hana)).model;
    expect({ number: again.modelNumber, parent: again.parentModelId }).toEqual({ number: 2, parent: parent.id });
  });

  test("an import gets the next number and keeps the parent only when it is the importer's own model", async () => {
    const ivan = await server().actor();
    const judy = await server().actor();
    const parent = await create(transport, ivan);
    const child = await create(transport, ivan, { parentModelId: parent.id });
    await upload(transport, ivan, child.id);
    const exported: Array<{ part: any }> = await ok(transport, "exportVoiceModel", { modelId: child.id }, ivan);
    const messages = (parentModelId?: string) =>
      exported.map((m) => {
        if (m.part.case !== "header") return { part: m.part };
        return { part: { case: "header", value: { ...m.part.value, model: { ...m.part.value.model, parentModelId } } } };
      });
    expect(exported[0].part.value.model).toMatchObject({ modelNumber: 2, parentModelId: parent.id });

    const own = (await ok(transport, "importVoiceModel", messages(parent.id), ivan)).model;
    expect({ number: own.modelNumber, parent: own.parentModelId }).toEqual({ number: 3, parent: parent.id });
    // Another user's import drops Ivan's parent (without saying whether it exists).
    const foreign = (await ok(transport, "importVoiceModel", messages(parent.id), judy)).model;
    expect({ number: foreign.modelNumber, parent: foreign.parentModelId }).toEqual({ number: 1, parent: undefined });
    expect((await ok(transport, "importVoiceModel", messages(randomUUID()), judy)).model.parentModelId).toBeUndefined();
    // An export whose parent names one of Judy's models keeps it for her.
    const judys = foreign.id;
    const kept = (await ok(transport, "importVoiceModel", messages(judys), judy)).model;
    expect({ number: kept.modelNumber, parent: kept.parentModelId }).toEqual({ number: 3, parent: judys });
    expectRpcError(await refused(transport, "importVoiceModel", messages("nope") as never, judy), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "header.model.parentModelId",
    });
  });
});

test("lineages are bounded at 1,000 ancestors and 1,000 descendants, saying so", async () => {
  const kim = await server().actor();
  const root = await create("grpc", kim);
  // A chain of 1,001 more models below the root, written in one statement.
  const chain = Array.from({ length: 1001 }, () => randomUUID());
  await server().db.knex("voice_models").insert(
    chain.map((id, i) => ({ id, user_id: kim.userId, provider: "xtts-v2", model_path: `chain/${i}`, parent_model_id: i === 0 ? root.id : chain[i - 1] })),
  );
  const leaf = chain[chain.length - 1];
  const fromLeaf = await lineage("grpc", kim, leaf);
  // The 1,000 nearest, root-side first: the root itself is cut.
  expect({ n: fromLeaf.ancestors.length, first: fromLeaf.ancestors[0].id, last: fromLeaf.ancestors[999].id, truncated: fromLeaf.truncated }).toEqual({
    n: 1000,
    first: chain[0],
    last: chain[999],
    truncated: true,
  });
  expect(fromLeaf.model.modelNumber).toBe(1002);
  const fromRoot = await lineage("grpc", kim, root.id);
  expect({ n: fromRoot.descendants.length, first: fromRoot.descendants[0].id, last: fromRoot.descendants[999].id, truncated: fromRoot.truncated }).toEqual({
    n: 1000,
    first: chain[0],
    last: chain[999],
    truncated: true,
  });
  const middle = await lineage("grpc", kim, chain[499]);
  expect({ up: middle.ancestors.length, down: middle.descendants.length, truncated: middle.truncated }).toEqual({ up: 500, down: 501, truncated: false });
  // The list filter holds the model and the same bounded walks.
  expect((await ok("grpc", "listVoiceModels", { lineageOf: leaf, limit: 1 }, kim)).total).toBe(1001);
  expect((await ok("connect", "listVoiceModels", { lineageOf: chain[499], limit: 1 }, kim)).total).toBe(1002);
});

/**
 * A copy of a backup as the service wrote it before model lineage: the same plain content with
 * modelNumber and parentModelId left out of the manifest, sealed with the server's keys.
 */
async function backupWithoutLineage(backupId: string): Promise<string> {
  const files = parseConfig({ DATA_DIR: dataDir, JWT_SECRET }).files;
  const sealed = new SealedStore(openBlobStore(files), openKeyProvider(masterKeySource(files, dataDir)));
  const knex = server().db.knex;
  const original = (await backupRows.findBackup(knex, backupId))!;
  const parts: Buffer[] = [];
  for await (const chunk of await sealed.read(backupRows.sealedRefOfBackup(original))) parts.push(chunk);
  const plain = Buffer.concat(parts);
  const length = plain.readUInt32BE(4);
  const manifest = JSON.parse(plain.subarray(8, 8 + length).toString("utf8"));
  for (const m of manifest.models) {
    delete m.modelNumber;
    delete m.parentModelId;
  }
  const json = Buffer.from(JSON.stringify(manifest));
  const head = Buffer.alloc(8);
  plain.copy(head, 0, 0, 4);
  head.writeUInt32BE(json.length, 4);
  const id = randomUUID();
  const key = `backups/${original.userId}/${id}.vmb`;
  const written = await sealed.write(key, (async function* () {
    yield Buffer.concat([head, json, plain.subarray(8 + length)]);
  })(), { compression: "never" });
  await backupRows.insertBackup(knex, id, original.userId, written, manifest.models.length, true);
  return key;
}

test("a restore from a backup made before model numbers gives re-created models new numbers; overwritten ones keep number and parent", async () => {
  const lena = await server().actor();
  const parent = await create("grpc", lena);
  const child = await create("grpc", lena, { parentModelId: parent.id });
  const gone = await create("grpc", lena);
  const made = await ok("grpc", "createBackup", { includeDeleted: true }, lena);
  const backupPath = await backupWithoutLineage(made[made.length - 1].backup.backupId);
  await purge("grpc", lena, gone.id);
  expect((await create("grpc", lena)).modelNumber).toBe(4);

  const result = await ok("connect", "restoreBackup", { backupPath, overwriteExisting: true }, lena);
  expect({ restored: result.restored, overwritten: result.overwritten }).toEqual({ restored: 1, overwritten: 2 });
  const [p, c, g] = await Promise.all([parent, child, gone].map(async (m) => (await ok("grpc", "getVoiceModel", { modelId: m.id }, lena)).model));
  expect([p.modelNumber, c.modelNumber, g.modelNumber]).toEqual([1, 2, 5]);
  expect(c.parentModelId).toBe(parent.id);
  expect((await create("grpc", lena)).modelNumber).toBe(6);
});
