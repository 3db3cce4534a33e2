import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createModel, sleep, startTestServer, type Actor, type TestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

const LIMITS = { RATE_LIMIT_CREATE: "100000/3600", RATE_LIMIT_UPDATE: "100000/3600", RATE_LIMIT_EXEMPT_ROLES: "admin,service,user" };

async function upload(server: TestServer, actor: Actor, modelId: string, body: Buffer) {
  return grpcStreamingClient(server.grpcPort, actor.token).uploadModelFile(
    (async function* () {
      yield { part: { case: "header" as const, value: { modelId } } };
      yield { part: { case: "chunk" as const, value: body } };
    })(),
  );
}

async function readFile(server: TestServer, actor: Actor, modelId: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of grpcStreamingClient(server.grpcPort, actor.token).readModelFile({ modelId })) parts.push(Buffer.from(m.chunk));
  return Buffer.concat(parts);
}

function keysUnder(root: string, prefix: string): string[] {
  const dir = path.join(root, prefix);
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.relative(root, path.join(e.parentPath, e.name)));
}

async function waitFor(check: () => boolean, what: string, ms = 10_000) {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe("soft delete, undelete, deduplicated references", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-del-"));
  const root = path.join(dataDir, "blobs");
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { DATA_DIR: dataDir, ...LIMITS } });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("the file moves to deleted/{userId}/ only when its last live model is deleted, and back on undelete", async () => {
    const user = await server.actor();
    const body = randomBytes(50_000);
    const m1 = await createModel(user);
    const m2 = await createModel(user);
    await upload(server, user, m1.id, body);
    await upload(server, user, m2.id, body);
    expect(keysUnder(root, user.userId)).toHaveLength(1);

    await user.grpc.deleteVoiceModel({ modelId: m1.id });
    // m2 still refers to the same bytes: the file's row (the mover's job list, committed with the
    // delete) asks for no move, and nothing moved.
    const rows = await server.db.knex("model_files").where({ user_id: user.userId });
    expect(rows.map((r) => ({ location: r.location, live_refs: r.live_refs, moveWanted: r.storage_key !== r.live_key }))).toEqual([
      { location: "live", live_refs: 1, moveWanted: false },
    ]);
    expect(keysUnder(root, user.userId)).toHaveLength(1);
    expect(keysUnder(root, `deleted/${user.userId}`)).toHaveLength(0);
    expect((await readFile(server, user, m2.id)).equals(body)).toBe(true);

    await user.grpc.deleteVoiceModel({ modelId: m2.id });
    await waitFor(() => keysUnder(root, `deleted/${user.userId}`).length === 1, "the move to deleted/");
    expect(keysUnder(root, user.userId)).toHaveLength(0);
    const read = await server.call("grpc", "getVoiceModel", { modelId: m2.id }, user.token);
    expect(read.code).toBe(Code.NotFound);

    const { message } = await user.grpc.undeleteVoiceModel({ modelId: m2.id });
    expect(message.model!.deletedAt).toBeUndefined();
    expect(message.model!.isActive).toBe(false);
    await waitFor(() => keysUnder(root, user.userId).length === 1, "the move back");
    expect(keysUnder(root, `deleted/${user.userId}`)).toHaveLength(0);
    expect((await readFile(server, user, m2.id)).equals(body)).toBe(true);
  });

  test("backups leave deleted models out unless asked", async () => {
    const user = await server.actor();
    const m = await createModel(user);
    await upload(server, user, m.id, randomBytes(1000));
    await user.grpc.deleteVoiceModel({ modelId: m.id });
    const count = async (includeDeleted: boolean) => {
      let n = -1;
      for await (const r of grpcStreamingClient(server.grpcPort, user.token).createBackup({ includeDeleted })) if (r.backup) n = r.backup.modelCount;
      return n;
    };
    expect(await count(false)).toBe(0);
    expect(await count(true)).toBe(1);
  });

  test("undelete: a live model is NOT_FOUND; another user's is PERMISSION_DENIED", async () => {
    const owner = await server.actor();
    const other = await server.actor();
    const m = await createModel(owner);
    expect((await server.call("grpc", "undeleteVoiceModel", { modelId: m.id }, owner.token)).code).toBe(Code.NotFound);
    await owner.grpc.deleteVoiceModel({ modelId: m.id });
    expect((await server.call("grpc", "undeleteVoiceModel", { modelId: m.id }, other.token)).code).toBe(Code.PermissionDenied);
    expect((await server.call("connect", "undeleteVoiceModel", { modelId: m.id }, other.token)).code).toBe(Code.PermissionDenied);
  });
});

describe("purge after the retention period, orphan sweep", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-purge-"));
  const root = path.join(dataDir, "blobs");
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({
      env: { DATA_DIR: dataDir, DELETED_RETENTION_DAYS: "0", FILE_PURGE_INTERVAL_MS: "200", ORPHAN_GRACE_SECONDS: "60", ...LIMITS },
    });
  });
  afterAll(async () => {
    await server?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a deleted model and its file are removed for good; undelete is then NOT_FOUND", async () => {
    const user = await server.actor();
    const m = await createModel(user);
    await upload(server, user, m.id, randomBytes(20_000));
    await user.grpc.deleteVoiceModel({ modelId: m.id });
    await waitFor(() => keysUnder(root, user.userId).length === 0 && keysUnder(root, `deleted/${user.userId}`).length === 0, "the purge");
    const row = await server.db.knex("voice_models").where({ id: m.id }).first();
    expect(row).toBeUndefined();
    expect(await server.db.knex("model_files").where({ user_id: user.userId }).first()).toBeUndefined();
    expect((await server.call("grpc", "undeleteVoiceModel", { modelId: m.id }, user.token)).code).toBe(Code.NotFound);
  });

  test("objects no row refers to and older than the grace period are swept; younger ones and incoming/ are left alone", async () => {
    const stray = path.join(root, "someone", "model-x", "leftover-of-a-crash");
    fs.mkdirSync(path.dirname(stray), { recursive: true });
    fs.writeFileSync(stray, "x");
    // Older than the grace period (uploads in flight are younger and never touched).
    const old = new Date(Date.now() - 120_000);
    fs.utimesSync(stray, old, old);
    const fresh = path.join(root, "someone", "model-y", "upload-in-flight");
    fs.mkdirSync(path.dirname(fresh), { recursive: true });
    fs.writeFileSync(fresh, "y");
    const incoming = path.join(root, "incoming", "someone", "raw.pth");
    fs.mkdirSync(path.dirname(incoming), { recursive: true });
    fs.writeFileSync(incoming, "raw");
    await waitFor(() => !fs.existsSync(stray), "the orphan sweep");
    expect(fs.existsSync(incoming)).toBe(true);
    expect(fs.existsSync(fresh)).toBe(true);
  });
});
