import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createPostgresDatabase } from "../helpers/database";
import { JWT_SECRET, onPostgres } from "../helpers/env";
import { grpcStreamingClient } from "../helpers/streaming-client";
import { killSpawned, spawnServer, type SpawnedServer } from "../helpers/spawn";
import { userToken } from "../helpers/tokens";

// A restore killed midway (SIGKILL during the restore) leaves the previous state; after a restart
// the same restore completes. On TEST_DB=pglite the server uses an embedded PGlite data folder.
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-restore-kill-"));
let dropDb: (() => Promise<void>) | undefined;
let databaseUrl: string | undefined;

beforeAll(async () => {
  if (onPostgres) {
    const created = await createPostgresDatabase();
    databaseUrl = created.url;
    dropDb = created.drop;
  }
});
afterAll(async () => {
  await killSpawned();
  await dropDb?.();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

const env = () => ({
  DATA_DIR: dataDir,
  DATABASE_URL: databaseUrl,
  JWT_SECRET,
  MASTER_KEY: Buffer.alloc(32, 7).toString("base64"),
  RATE_LIMIT_EXEMPT_ROLES: "admin,service,user",
  // Deleted models and their files are purged at once, so the restore has files to write.
  DELETED_RETENTION_DAYS: "0",
  FILE_PURGE_INTERVAL_MS: "100",
});

/** What a restore may change: the user's rows (models and their file references). */
async function state(server: SpawnedServer, token: string) {
  const client = grpcStreamingClient(server.grpcPort, token);
  const { models } = await client.listVoiceModels({ showDeleted: true, limit: 100 });
  return models
    .map((m) => ({ id: m.id, metadata: m.metadata, deleted: m.deletedAt !== undefined, active: m.isActive, path: m.modelPath, etag: m.etag }))
    .sort((a, b) => (a.id < b.id ? -1 : 1));
}

test("SIGKILL during RestoreBackup leaves the previous state; a restart then restores", async () => {
  const userId = `restore-kill-${randomBytes(4).toString("hex")}`;
  const token = await userToken(userId);
  let server = await spawnServer(env());
  let client = grpcStreamingClient(server.grpcPort, token);
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const { model } = await client.createVoiceModel({ provider: "xtts-v2", modelPath: `m${i}.pth`, qualityScore: 0.5 + i / 10, metadata: { v: 1 } });
    ids.push(model!.id);
    const body = randomBytes(24 * 1024 * 1024);
    await client.uploadModelFile(
      (async function* () {
        yield { part: { case: "header" as const, value: { modelId: model!.id } } };
        for (let o = 0; o < body.length; o += 1 << 20) yield { part: { case: "chunk" as const, value: body.subarray(o, o + (1 << 20)) } };
      })(),
    );
  }
  let backupPath = "";
  for await (const r of client.createBackup({})) if (r.backup) backupPath = r.backup.backupPath;

  // After the backup: three models deleted (and purged with their files), one changed.
  for (const id of ids.slice(0, 3)) await client.deleteVoiceModel({ modelId: id });
  await client.updateVoiceModel({ modelId: ids[3], metadata: { v: 2 } });
  for (let i = 0; (await client.listVoiceModels({ showDeleted: true, limit: 100 })).models.length > 1; i++) {
    if (i > 200) throw new Error("models were not purged");
    await new Promise((r) => setTimeout(r, 50));
  }
  const before = await state(server, token);
  const userFolder = path.join(dataDir, "blobs", userId);
  const objectsBefore = new Set(fs.readdirSync(userFolder, { recursive: true }).map(String));

  // Start the restore and kill the server as soon as it has written its first new object.
  const restoring = client.restoreBackup({ backupPath, overwriteExisting: true, activateRestored: true }).catch((e: Error) => e);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const now = fs.readdirSync(userFolder, { recursive: true }).map(String);
    if (now.some((k) => !objectsBefore.has(k) && !k.endsWith("/") && fs.statSync(path.join(userFolder, k)).isFile())) break;
    if (Date.now() > deadline) throw new Error("the restore wrote nothing within 20 s");
    await new Promise((r) => setTimeout(r, 5));
  }
  await server.stop("SIGKILL");
  expect(await restoring).toBeInstanceOf(Error);

  server = await spawnServer(env());
  client = grpcStreamingClient(server.grpcPort, token);
  expect(await state(server, token)).toEqual(before);

  const result = await client.restoreBackup({ backupPath, overwriteExisting: true, activateRestored: true });
  expect(result).toMatchObject({ restored: 3, skipped: 0, overwritten: 1 });
  const after = await state(server, token);
  expect(after.every((m) => !m.deleted && (m.metadata as { v: number }).v === 1)).toBe(true);
  expect(after.filter((m) => m.active).map((m) => m.id)).toEqual([ids[3]]);
  await server.stop();
}, 180_000);
