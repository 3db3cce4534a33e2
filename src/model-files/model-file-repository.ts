import type { Db, Tx } from "../db/transaction";
import type { SealedObject, SealedRef } from "../storage/sealed-store";
import type { ChangeLog } from "../voice-models/model-events";
import * as modelRepo from "../voice-models/repository";

/** One stored, sealed model file (see migration 003). */
export interface ModelFileRecord {
  id: string;
  userId: string;
  sha256: string;
  sizeBytes: number;
  storedBytes: number;
  compressed: boolean;
  keyId: string;
  wrappedKey: Buffer;
  /** Where the object is now. */
  storageKey: string;
  liveKey: string;
  deletedKey: string;
  /** Where the row wants it: live while a live model refers to it. */
  location: "live" | "deleted";
  liveRefs: number;
  createdAt: Date;
  updatedAt: Date;
}

interface ModelFileRow {
  id: string;
  user_id: string;
  sha256: string;
  size_bytes: number | string;
  stored_bytes: number | string;
  compressed: boolean;
  key_id: string;
  wrapped_key: Uint8Array;
  storage_key: string;
  live_key: string;
  deleted_key: string;
  location: "live" | "deleted";
  live_refs: number;
  created_at: Date;
  updated_at: Date;
}

const TABLE = "model_files";

/** The one place a model_files row becomes a record. */
function toRecord(row: ModelFileRow): ModelFileRecord {
  return {
    id: row.id,
    userId: row.user_id,
    sha256: row.sha256,
    sizeBytes: Number(row.size_bytes),
    storedBytes: Number(row.stored_bytes),
    compressed: row.compressed,
    keyId: row.key_id,
    wrappedKey: Buffer.from(row.wrapped_key),
    storageKey: row.storage_key,
    liveKey: row.live_key,
    deletedKey: row.deleted_key,
    location: row.location,
    liveRefs: row.live_refs,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/** What SealedStore.read needs to open the file where it is now. */
export const sealedRefOf = (file: ModelFileRecord): SealedRef => ({ key: file.storageKey, keyId: file.keyId, wrapped: file.wrappedKey });

export async function findFile(db: Db, id: string): Promise<ModelFileRecord | undefined> {
  const row = await db<ModelFileRow>(TABLE).where({ id }).first();
  return row ? toRecord(row) : undefined;
}

/** The file a model refers to (live or soft-deleted model alike). */
export async function findFileOfModel(db: Db, modelId: string): Promise<ModelFileRecord | undefined> {
  const fileId = await modelRepo.fileIdOfModel(db, modelId);
  return fileId ? findFile(db, fileId) : undefined;
}

export async function findByHash(db: Db, userId: string, sha256: string): Promise<ModelFileRecord | undefined> {
  const row = await db<ModelFileRow>(TABLE).where({ user_id: userId, sha256 }).first();
  return row ? toRecord(row) : undefined;
}

/** Every storage key of a user's files (where they are, and both places they may move to). */
export async function storageKeysOfUser(db: Db, userId: string): Promise<string[]> {
  const keys = new Set<string>();
  for (const f of await db<ModelFileRow>(TABLE).where({ user_id: userId }).select("storage_key", "live_key", "deleted_key")) {
    keys.add(f.storage_key).add(f.live_key).add(f.deleted_key);
  }
  return [...keys];
}

export async function deleteFilesOfUser(trx: Tx, userId: string): Promise<void> {
  await trx(TABLE).where({ user_id: userId }).delete();
}

export async function findByHashForUpdate(trx: Tx, userId: string, sha256: string): Promise<ModelFileRecord | undefined> {
  const row = await trx<ModelFileRow>(TABLE).where({ user_id: userId, sha256 }).forUpdate().first();
  return row ? toRecord(row) : undefined;
}

export async function insertFile(trx: Tx, id: string, userId: string, sealed: SealedObject): Promise<ModelFileRecord> {
  const [row] = await trx<ModelFileRow>(TABLE)
    .insert({
      id,
      user_id: userId,
      sha256: sealed.sha256,
      size_bytes: sealed.size,
      stored_bytes: sealed.storedSize,
      compressed: sealed.compressed,
      key_id: sealed.keyId,
      wrapped_key: sealed.wrapped,
      storage_key: sealed.key,
      live_key: sealed.key,
      deleted_key: `deleted/${userId}/${id}`,
      location: "live",
      live_refs: 1,
    })
    .returning("*");
  return toRecord(row as ModelFileRow);
}

/**
 * Adds delta live references; the row's location follows (live while any remain). The mover
 * brings the object to the new location after commit.
 */
export async function addLiveRefs(trx: Tx, id: string, delta: number): Promise<ModelFileRecord> {
  const [row] = await trx<ModelFileRow>(TABLE)
    .where({ id })
    .update({
      live_refs: trx.raw("live_refs + ?", [delta]) as unknown as number,
      location: trx.raw("CASE WHEN live_refs + ? > 0 THEN 'live' ELSE 'deleted' END", [delta]) as unknown as "live",
      updated_at: trx.raw("now()") as unknown as Date,
    })
    .returning("*");
  return toRecord(row as ModelFileRow);
}

/** Points a model at a file (an update of the model): modelPath becomes the service's key for it. */
export async function setModelFile(trx: Tx, log: ChangeLog, modelId: string, file: ModelFileRecord) {
  return modelRepo.patchModel(trx, log, modelId, { fileId: file.id, modelPath: file.liveKey, sizeBytes: file.sizeBytes });
}

/** Deletes file rows no model refers to and no live reference counts, returning their keys. */
export async function deleteUnreferencedFiles(db: Db): Promise<Array<{ storage_key: string; live_key: string; deleted_key: string }>> {
  return (await db(`${TABLE} as f`)
    .where("f.live_refs", 0)
    .whereNotIn("f.id", modelRepo.referencedFileIds(db))
    .returning(["f.storage_key", "f.live_key", "f.deleted_key"])
    .delete()) as Array<{ storage_key: string; live_key: string; deleted_key: string }>;
}

/** Files whose object is not where their row wants it (the mover's work list). */
export async function filesToMove(db: Db, limit: number): Promise<ModelFileRecord[]> {
  const rows = await db<ModelFileRow>(TABLE)
    .where((q) =>
      q
        .where({ location: "live" })
        .whereRaw("storage_key <> live_key")
        .orWhere((q2) => q2.where({ location: "deleted" }).whereRaw("storage_key <> deleted_key")),
    )
    .orderBy("updated_at")
    .limit(limit);
  return rows.map((r) => toRecord(r as ModelFileRow));
}

/** Records that the object now sits at key, unless the row's wish changed meanwhile. */
export async function recordMoved(db: Db, id: string, location: "live" | "deleted", key: string): Promise<boolean> {
  const n = await db(TABLE).where({ id, location }).update({ storage_key: key });
  return n > 0;
}

/** Every storage key a row refers to (the orphan sweep keeps these). */
export async function isReferencedKey(db: Db, key: string): Promise<boolean> {
  const row = await db(TABLE).where({ storage_key: key }).orWhere({ live_key: key }).orWhere({ deleted_key: key }).first("id");
  return row !== undefined;
}

/** Deletes one file row when no model refers to it and no live reference counts; returns its keys. */
export async function deleteFileIfUnreferenced(trx: Tx, id: string): Promise<string[]> {
  const rows = (await trx(`${TABLE} as f`)
    .where("f.id", id)
    .where("f.live_refs", 0)
    .whereNotIn("f.id", modelRepo.referencedFileIds(trx))
    .returning(["f.storage_key", "f.live_key", "f.deleted_key"])
    .delete()) as Array<{ storage_key: string; live_key: string; deleted_key: string }>;
  return [...new Set(rows.flatMap((r) => [r.storage_key, r.live_key, r.deleted_key]))];
}
