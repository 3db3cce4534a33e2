import type { Db, Tx } from "../db/transaction";
import type { SealedObject, SealedRef } from "../storage/sealed-store";

export interface BackupRecord {
  id: string;
  userId: string;
  storageKey: string;
  sizeBytes: number;
  storedBytes: number;
  sha256: string;
  keyId: string;
  wrappedKey: Buffer;
  modelCount: number;
  includeDeleted: boolean;
  createdAt: Date;
}

interface BackupRow {
  id: string;
  user_id: string;
  storage_key: string;
  size_bytes: number | string;
  stored_bytes: number | string;
  sha256: string;
  key_id: string;
  wrapped_key: Uint8Array;
  model_count: number;
  include_deleted: boolean;
  created_at: Date;
}

function toRecord(row: BackupRow): BackupRecord {
  return {
    id: row.id,
    userId: row.user_id,
    storageKey: row.storage_key,
    sizeBytes: Number(row.size_bytes),
    storedBytes: Number(row.stored_bytes),
    sha256: row.sha256,
    keyId: row.key_id,
    wrappedKey: Buffer.from(row.wrapped_key),
    modelCount: row.model_count,
    includeDeleted: row.include_deleted,
    createdAt: row.created_at,
  };
}

export const sealedRefOfBackup = (b: BackupRecord): SealedRef => ({ key: b.storageKey, keyId: b.keyId, wrapped: b.wrappedKey });

/** The columns that describe a backup's sealed object. */
const objectColumns = (sealed: SealedObject, modelCount: number) => ({
  storage_key: sealed.key,
  size_bytes: sealed.size,
  stored_bytes: sealed.storedSize,
  sha256: sealed.sha256,
  key_id: sealed.keyId,
  wrapped_key: sealed.wrapped,
  model_count: modelCount,
});

export async function insertBackup(db: Db, id: string, userId: string, sealed: SealedObject, modelCount: number, includeDeleted: boolean): Promise<BackupRecord> {
  const [row] = await db<BackupRow>("backups")
    .insert({
      id,
      user_id: userId,
      ...objectColumns(sealed, modelCount),
      include_deleted: includeDeleted,
    })
    .returning("*");
  return toRecord(row as BackupRow);
}

/** A page of a user's backups, newest first, after a (created_at, id) position. */
export async function listBackups(db: Db, userId: string, limit: number, after?: { createdAtMs: number; id: string }): Promise<BackupRecord[]> {
  const query = db<BackupRow>("backups").where({ user_id: userId });
  if (after) query.whereRaw("(created_at, id) < (?, ?)", [new Date(after.createdAtMs), after.id]);
  const rows = await query.orderBy([{ column: "created_at", order: "desc" }, { column: "id", order: "desc" }]).limit(limit);
  return rows.map((r) => toRecord(r as BackupRow));
}

export async function findBackup(db: Db, id: string): Promise<BackupRecord | undefined> {
  const row = await db<BackupRow>("backups").where({ id }).first();
  return row ? toRecord(row) : undefined;
}

export async function findBackupByKey(db: Db, key: string): Promise<BackupRecord | undefined> {
  const row = await db<BackupRow>("backups").where({ storage_key: key }).first();
  return row ? toRecord(row) : undefined;
}

/** The storage keys of a user's backups (erasure records them before the rows go). */
export async function storageKeysOfUser(db: Db, userId: string): Promise<string[]> {
  return (await db<BackupRow>("backups").where({ user_id: userId }).pluck("storage_key")) as string[];
}

export async function deleteBackupsOfUser(trx: Tx, userId: string): Promise<void> {
  await trx("backups").where({ user_id: userId }).delete();
}

/** A withdrawal: every backup of the user may hold the model until the rewrite job has looked. */
export async function markRewritesOfUser(trx: Tx, userId: string, modelId: string): Promise<void> {
  await trx.raw(
    `INSERT INTO backup_rewrites (backup_id, model_id) SELECT id, ? FROM backups WHERE user_id = ? ON CONFLICT DO NOTHING`,
    [modelId, userId],
  );
}

/** Marks one backup (made while a withdrawal committed) for the rewrite job. */
export async function markRewrite(db: Db, backupId: string, modelIds: readonly string[]): Promise<void> {
  if (modelIds.length === 0) return;
  await db("backup_rewrites").insert(modelIds.map((modelId) => ({ backup_id: backupId, model_id: modelId }))).onConflict().ignore();
}

export async function rewritePending(db: Db, backupId: string): Promise<boolean> {
  return (await db("backup_rewrites").where({ backup_id: backupId }).first("backup_id")) !== undefined;
}

/** Backups waiting for a rewrite (optionally one user's), with the withdrawn models each may hold. */
export async function pendingRewrites(db: Db, userId?: string): Promise<Map<string, string[]>> {
  const query = db("backup_rewrites as r").join("backups as b", "b.id", "r.backup_id").select("r.backup_id", "r.model_id").orderBy("r.requested_at");
  if (userId !== undefined) query.where("b.user_id", userId);
  const out = new Map<string, string[]>();
  for (const row of (await query) as Array<{ backup_id: string; model_id: string }>) out.set(row.backup_id, [...(out.get(row.backup_id) ?? []), row.model_id]);
  return out;
}

export async function findBackupForUpdate(trx: Tx, id: string): Promise<BackupRecord | undefined> {
  const row = await trx<BackupRow>("backups").where({ id }).forUpdate().first();
  return row ? toRecord(row) : undefined;
}

/** The rewrite's swap: the row points at the new object; the old key waits for the purge. */
export async function swapObject(trx: Tx, id: string, sealed: SealedObject, modelCount: number, oldKey: string, done: readonly string[]): Promise<void> {
  await trx("backups")
    .where({ id })
    .update(objectColumns(sealed, modelCount));
  await trx("backup_rewrites").where({ backup_id: id }).whereIn("model_id", done).delete();
  await trx("backup_purge_keys").insert({ storage_key: oldKey }).onConflict().ignore();
}

/** A backup that held nothing else: its row goes, its object waits for the purge. */
export async function deleteBackup(trx: Tx, id: string, oldKey: string): Promise<void> {
  await trx("backups").where({ id }).delete();
  await trx("backup_purge_keys").insert({ storage_key: oldKey }).onConflict().ignore();
}

/** The rewrite found none of the models in the backup. */
export async function clearRewrites(db: Db, id: string, done: readonly string[]): Promise<void> {
  await db("backup_rewrites").where({ backup_id: id }).whereIn("model_id", done).delete();
}

export async function purgeKeys(db: Db): Promise<string[]> {
  return (await db("backup_purge_keys").orderBy("created_at").pluck("storage_key")) as string[];
}

export async function forgetPurgeKey(db: Db, key: string): Promise<void> {
  await db("backup_purge_keys").where({ storage_key: key }).delete();
}
