import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { expectRpcError } from "./helpers/expect-error";
import { createModel, sleep, startTestServer, type Actor, type TestServer } from "./helpers/harness";
import { grpcStreamingClient } from "./helpers/streaming-client";

// Writes of model rows by other rooms (purge, restore, erasure) go through the voice-models
// repository, so the change listeners (caches, audit, shares) see them like the service's own.

const LIMITS = { RATE_LIMIT_CREATE: "100000/3600", RATE_LIMIT_UPDATE: "100000/3600", RATE_LIMIT_EXEMPT_ROLES: "admin,service,user" };

async function waitFor(check: () => Promise<boolean>, what: string, ms = 15_000) {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

async function upload(server: TestServer, actor: Actor, modelId: string, body: Buffer) {
  return grpcStreamingClient(server.grpcPort, actor.token).uploadModelFile(
    (async function* () {
      yield { part: { case: "header" as const, value: { modelId } } };
      yield { part: { case: "chunk" as const, value: body } };
    })(),
  );
}

async function auditOf(server: TestServer, modelId: string) {
  const admin = await server.adminActor();
  return (await admin.grpc.listAuditEvents({ modelId, limit: 100 })).message.events;
}

const rowOf = (server: TestServer, id: string) => server.db.knex("voice_models").where({ id }).first();

describe("the purge after the retention period", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-listeners-purge-"));
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { DATA_DIR: dataDir, DELETED_RETENTION_DAYS: "0", FILE_PURGE_INTERVAL_MS: "200", ...LIMITS } });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a purged model leaves the cached list pages and is audited as model.purged", async () => {
    const user = await server.actor();
    const keep = await createModel(user);
    const doomed = await createModel(user);
    await user.grpc.deleteVoiceModel({ modelId: doomed.id });
    // The page with deleted models goes into the cache, and is read again after the purge.
    const listed = async () => (await user.grpc.listVoiceModels({ showDeleted: true, limit: 100 })).message.models.map((m) => m.id);
    await listed();
    await waitFor(async () => (await rowOf(server, doomed.id)) === undefined, "the purge");
    expect(await listed()).toEqual([keep.id]);
    const events = await auditOf(server, doomed.id);
    expect(events.map((e) => e.action)).toEqual(["model.purged", "model.deleted", "model.created"]);
    expect(events[0]).toMatchObject({ actorId: "system:retention", targetUserId: user.userId });
  });
});

describe("restore and erasure", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-listeners-"));
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { DATA_DIR: dataDir, ...LIMITS } });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a restore that points a model back at its backed-up file invalidates the cached model and is audited", async () => {
    const user = await server.actor();
    const model = await createModel(user);
    await upload(server, user, model.id, randomBytes(30_000));
    const backedUp = (await rowOf(server, model.id)).model_path as string;
    let backupPath = "";
    for await (const m of grpcStreamingClient(server.grpcPort, user.token).createBackup({})) if (m.backup) backupPath = m.backup.backupPath;
    await upload(server, user, model.id, randomBytes(30_000));
    // Read twice so the model cache holds the state with the second file.
    for (let i = 0; i < 2; i++) expect((await user.grpc.getVoiceModel({ modelId: model.id })).message.model!.modelPath).not.toBe(backedUp);

    const result = await grpcStreamingClient(server.grpcPort, user.token).restoreBackup({ backupPath, overwriteExisting: true });
    expect(result).toMatchObject({ restored: 0, overwritten: 1 });
    const row = await rowOf(server, model.id);
    const read = (await user.grpc.getVoiceModel({ modelId: model.id })).message.model!;
    expect(read.modelPath).toBe(row.model_path);
    expect(read.etag).toBe(`v${row.version}`);
    const restore = (await auditOf(server, model.id))[0];
    expect(restore).toMatchObject({ action: "model.updated", actorId: user.userId });
    expect(restore.details).toMatchObject({ changes: [{ kind: "updated", modelId: model.id }], changeCount: 1 });
  });

  test("erasure records the removal of soft-deleted models too", async () => {
    const admin = await server.adminActor();
    const user = await server.actor();
    const gone = await createModel(user);
    await user.grpc.deleteVoiceModel({ modelId: gone.id });
    for await (const _ of grpcStreamingClient(server.grpcPort, admin.token).deleteUserData({ userId: user.userId })) void _;
    expect(await rowOf(server, gone.id)).toBeUndefined();
    const events = await auditOf(server, gone.id);
    expect(events[0]).toMatchObject({ action: "model.purged", actorId: admin.userId });
    expect(events[0].details).toMatchObject({ changes: [{ kind: "purged", modelId: gone.id }], changeCount: 1 });
    expectRpcError(await server.call("grpc", "getVoiceModel", { modelId: gone.id }, admin.token), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND" });
  });
});
