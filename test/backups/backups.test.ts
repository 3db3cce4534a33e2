import { Code } from "@connectrpc/connect";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { CreateBackupResponse } from "../../gen/voicemodel/v1/backups_pb";
import { createModel, sleep, useTestServer, type Actor } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";
import { rpcError } from "../helpers/expect-error";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-backups-"));
const blobRoot = path.join(dataDir, "blobs");
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

// Deleted models are purged at once here, so a restore can bring models back under their ids.
const server = useTestServer({
  env: {
    DATA_DIR: dataDir,
    DELETED_RETENTION_DAYS: "0",
    FILE_PURGE_INTERVAL_MS: "100",
    RATE_LIMIT_CREATE: "100000/3600",
    RATE_LIMIT_UPDATE: "100000/3600",
    RATE_LIMIT_EXEMPT_ROLES: "admin,service,user",
  },
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const client = (actor: Pick<Actor, "token">) => grpcStreamingClient(server().grpcPort, actor.token);

async function upload(actor: Actor, modelId: string, body: Buffer) {
  return client(actor).uploadModelFile(
    (async function* () {
      yield { part: { case: "header" as const, value: { modelId } } };
      for (let i = 0; i < body.length; i += 500_000) yield { part: { case: "chunk" as const, value: body.subarray(i, i + 500_000) } };
    })(),
  );
}

async function readFile(actor: Actor, modelId: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of client(actor).readModelFile({ modelId })) parts.push(Buffer.from(m.chunk));
  return Buffer.concat(parts);
}

async function backup(actor: Actor, includeDeleted = false): Promise<CreateBackupResponse[]> {
  const out: CreateBackupResponse[] = [];
  for await (const m of client(actor).createBackup({ includeDeleted })) out.push(m);
  return out;
}

async function purged(actor: Actor) {
  for (let i = 0; i < 200; i++) {
    const left = await server().db.knex("voice_models").where({ user_id: actor.userId }).whereNotNull("deleted_at").count({ n: "*" });
    if (Number(left[0].n) === 0) return;
    await sleep(50);
  }
  throw new Error("deleted models were not purged");
}

/** A user with three models: two sharing one file, one without a file, plus a deleted one. */
async function seed() {
  const user = await server().actor();
  const shared = randomBytes(1_200_000);
  const own = Buffer.alloc(700_000, 3);
  const a = await createModel(user, { qualityScore: 0.7, metadata: { name: "a" } });
  const b = await createModel(user, { qualityScore: 0.9, metadata: { name: "b" } });
  const c = await createModel(user, { qualityScore: 0.5 });
  const gone = await createModel(user, { qualityScore: 0.6 });
  await upload(user, a.id, shared);
  await upload(user, b.id, own);
  await upload(user, c.id, shared);
  await upload(user, gone.id, randomBytes(1000));
  await user.grpc.deleteVoiceModel({ modelId: gone.id });
  return { user, a, b, c, gone, shared, own };
}

test("CreateBackup streams progress and ends with path, size and checksum; ListBackups and GET download it", async () => {
  const { user, gone } = await seed();
  const messages = await backup(user);
  expect(messages[0].progress).toBeDefined();
  const last = messages[messages.length - 1].backup!;
  expect(last.backupPath).toBe(`backups/${user.userId}/${last.backupId}.vmb`);
  expect(last.modelCount).toBe(3);
  expect(messages.slice(0, -1).every((m) => m.progress !== undefined)).toBe(true);
  const { backups } = await client(user).listBackups({});
  expect(backups.map((b) => b.backupId)).toEqual([last.backupId]);

  const res = await fetch(`${server().baseUrl}/v1/backups/${last.backupId}`, { headers: { authorization: `Bearer ${user.token}` } });
  expect(res.status).toBe(200);
  const plain = Buffer.from(await res.arrayBuffer());
  expect(plain.length).toBe(Number(last.sizeBytes));
  expect(sha(plain)).toBe(last.sha256);
  expect(plain.subarray(0, 4).toString()).toBe("VMB1");
  const manifest = JSON.parse(plain.subarray(8, 8 + plain.readUInt32BE(4)).toString());
  expect(manifest.models.map((m: { id: string }) => m.id)).not.toContain(gone.id);
  // The shared file is stored once: 1.2 MB + 0.7 MB of files.
  expect(plain.length - 8 - plain.readUInt32BE(4)).toBe(1_900_000);
  const ranged = await fetch(`${server().baseUrl}/v1/backups/${last.backupId}`, {
    headers: { authorization: `Bearer ${user.token}`, range: "bytes=1000000-1000099" },
  });
  expect(ranged.status).toBe(206);
  expect(Buffer.from(await ranged.arrayBuffer()).equals(plain.subarray(1_000_000, 1_000_100))).toBe(true);
  // Stored encrypted: the plain manifest is not in the stored object.
  const stored = fs.readFileSync(path.join(blobRoot, last.backupPath));
  expect(stored.includes(Buffer.from(`"userId":"${user.userId}"`))).toBe(false);
});

test("backup -> delete everything -> restore brings the models back byte-identical; again skips or overwrites", async () => {
  const { user, a, b, c, shared, own } = await seed();
  const info = (await backup(user)).pop()!.backup!;
  for (const m of [a, b, c]) await user.grpc.deleteVoiceModel({ modelId: m.id });
  await purged(user);
  expect((await user.grpc.listVoiceModels({ limit: 100 })).message.models).toHaveLength(0);

  const restored = await client(user).restoreBackup({ backupPath: info.backupPath });
  expect(restored).toMatchObject({ restored: 3, skipped: 0, overwritten: 0 });
  expect((await readFile(user, a.id)).equals(shared)).toBe(true);
  expect((await readFile(user, b.id)).equals(own)).toBe(true);
  expect((await readFile(user, c.id)).equals(shared)).toBe(true);
  const { message } = await user.grpc.getVoiceModel({ modelId: b.id });
  expect(message.model!.metadata).toEqual({ name: "b" });
  expect(message.model!.qualityScore).toBe(0.9);

  const again = await client(user).restoreBackup({ backupPath: info.backupPath });
  expect(again).toMatchObject({ restored: 0, skipped: 3, overwritten: 0 });

  // Change a model, then overwrite it from the backup.
  await upload(user, b.id, randomBytes(5000));
  await user.grpc.updateVoiceModel({ modelId: b.id, metadata: { name: "changed" } });
  const over = await client(user).restoreBackup({ backupPath: `${info.backupPath}`, overwriteExisting: true });
  expect(over).toMatchObject({ restored: 0, skipped: 0, overwritten: 3 });
  expect((await readFile(user, b.id)).equals(own)).toBe(true);
  expect((await user.grpc.getVoiceModel({ modelId: b.id })).message.model!.metadata).toEqual({ name: "b" });
});

test("activateRestored leaves exactly one active model: the best restored one", async () => {
  const { user, b } = await seed();
  const info = (await backup(user)).pop()!.backup!;
  // Above 0.8: becomes the active model at once.
  const newer = await createModel(user, { qualityScore: 0.95 });
  expect((await user.grpc.getActiveVoiceModel({})).message.model!.id).toBe(newer.id);
  const result = await client(user).restoreBackup({ backupPath: info.backupPath, overwriteExisting: true, activateRestored: true });
  expect(result.activeModelId).toBe(b.id);
  const active = (await user.grpc.listVoiceModels({ isActive: true, limit: 100 })).message.models;
  expect(active.map((m) => m.id)).toEqual([b.id]);
});

test("only the caller's own backups: other users' paths, traversal and foreign buckets are refused", async () => {
  const { user } = await seed();
  const info = (await backup(user)).pop()!.backup!;
  const mallory = await server().actor();
  const before = (await user.grpc.listVoiceModels({ limit: 100 })).message.models.length;
  const attempts: Array<[string, Code]> = [
    [info.backupPath, Code.PermissionDenied],
    [`backups/${mallory.userId}/../${user.userId}/${info.backupId}.vmb`, Code.InvalidArgument],
    [`backups/${mallory.userId}/%2e%2e/${user.userId}/${info.backupId}.vmb`, Code.NotFound],
    [`/backups/${mallory.userId}/x.vmb`, Code.InvalidArgument],
    [`gs://other-bucket/backups/${user.userId}/${info.backupId}.vmb`, Code.InvalidArgument],
    [`${user.userId}/${info.backupId}.vmb`, Code.PermissionDenied],
  ];
  for (const [backupPath, code] of attempts) {
    const error = await rpcError(client(mallory).restoreBackup({ backupPath }));
    expect([backupPath, error.code]).toEqual([backupPath, code]);
  }
  expect((await rpcError(client(mallory).listBackups({ userId: user.userId }))).code).toBe(Code.PermissionDenied);
  expect((await rpcError((async () => {
    for await (const _ of client(mallory).createBackup({ userId: user.userId })) void _;
  })())).code).toBe(Code.PermissionDenied);
  const download = await fetch(`${server().baseUrl}/v1/backups/${info.backupId}`, { headers: { authorization: `Bearer ${mallory.token}` } });
  expect(download.status).toBe(403);
  expect((await fetch(`${server().baseUrl}/v1/backups/${info.backupId}`)).status).toBe(401);
  expect((await user.grpc.listVoiceModels({ limit: 100 })).message.models.length).toBe(before);
  expect((await mallory.grpc.listVoiceModels({ limit: 100 })).message.models.length).toBe(0);
});

test("a tampered backup is refused with FILE_CORRUPT and changes nothing", async () => {
  const { user, a, b } = await seed();
  const info = (await backup(user)).pop()!.backup!;
  const file = path.join(blobRoot, info.backupPath);
  const stored = fs.readFileSync(file);
  // A byte in the second file's region (late in the object).
  stored[stored.length - 200_000] ^= 0x10;
  fs.writeFileSync(file, stored);
  await user.grpc.deleteVoiceModel({ modelId: b.id });
  await purged(user);
  const keysBefore = fs.readdirSync(path.join(blobRoot, user.userId)).sort();
  const error = await rpcError(client(user).restoreBackup({ backupPath: info.backupPath, overwriteExisting: true }));
  expect(error).toEqual({ code: Code.DataLoss, reason: "FILE_CORRUPT" });
  const ids = (await user.grpc.listVoiceModels({ limit: 100 })).message.models.map((m) => m.id);
  expect(ids).not.toContain(b.id);
  expect(ids).toContain(a.id);
  expect(fs.readdirSync(path.join(blobRoot, user.userId)).sort()).toEqual(keysBefore);
});
