import type { Db, Tx } from "../db/transaction";
import type { SealedObject, SealedRef } from "../storage/sealed-store";

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
  const row = await db<ModelFileRow>(TABLE)
    .join("voice_models", "voice_models.file_id", `${TABLE}.id`)
    .where("voice_models.id", modelId)
    .first(`${TABLE}.*`);
  return row ? toRecord(row) : undefined;
}

export async function fileIdOfModel(db: Db, modelId: string): Promise<string | undefined> {
  const row = await db("voice_models").where({ id: modelId }).first("file_id");
  return row?.file_id ?? undefined;
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

/** Points a model at a file: model_path becomes the service's key for it. */
export async function setModelFile(trx: Tx, modelId: string, file: ModelFileRecord): Promise<void> {
  await trx("voice_models")
    .where({ id: modelId })
    .update({
      file_id: file.id,
      model_path: file.liveKey,
      size_bytes: file.sizeBytes,
      version: trx.raw("version + 1"),
      updated_at: trx.raw("now()"),
    });
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
