import type { Db, Tx } from "../db/transaction";
import type { SealedObject, SealedRef } from "../storage/sealed-store";

/** An upload session of a model file in unary calls (see migration 010). */
export interface UploadSessionRecord {
  id: string;
  modelId: string;
  /** The model's owner: the folder its staged chunks live in. */
  userId: string;
  /** The caller who started it: only they (or a privileged caller) may continue it. */
  startedBy: string;
  sizeBytes: number;
  sha256: string;
  chunkBytes: number;
  receivedBytes: number;
  createdAt: Date;
  updatedAt: Date;
}

/** One staged chunk: a sealed object of its own. */
export interface StagedChunkRecord {
  id: string;
  offset: number;
  sizeBytes: number;
  sha256: string;
  ref: SealedRef;
}

interface SessionRow {
  id: string;
  model_id: string;
  user_id: string;
  started_by: string;
  size_bytes: number | string;
  sha256: string;
  chunk_bytes: number;
  received_bytes: number | string;
  created_at: Date;
  updated_at: Date;
}

interface ChunkRow {
  id: string;
  upload_id: string;
  offset_bytes: number | string;
  size_bytes: number;
  sha256: string;
  storage_key: string;
  stored_bytes: number | string;
  key_id: string;
  wrapped_key: Uint8Array;
}

const SESSIONS = "model_file_uploads";
const CHUNKS = "model_file_upload_chunks";

function toSession(row: SessionRow): UploadSessionRecord {
  return {
    id: row.id,
    modelId: row.model_id,
    userId: row.user_id,
    startedBy: row.started_by,
    sizeBytes: Number(row.size_bytes),
    sha256: row.sha256,
    chunkBytes: row.chunk_bytes,
    receivedBytes: Number(row.received_bytes),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

const toChunk = (row: ChunkRow): StagedChunkRecord => ({
  id: row.id,
  offset: Number(row.offset_bytes),
  sizeBytes: row.size_bytes,
  sha256: row.sha256,
  ref: { key: row.storage_key, keyId: row.key_id, wrapped: Buffer.from(row.wrapped_key) },
});

export async function insertSession(db: Db, session: Omit<UploadSessionRecord, "receivedBytes" | "createdAt" | "updatedAt">): Promise<UploadSessionRecord> {
  const [row] = await db<SessionRow>(SESSIONS)
    .insert({
      id: session.id,
      model_id: session.modelId,
      user_id: session.userId,
      started_by: session.startedBy,
      size_bytes: session.sizeBytes,
      sha256: session.sha256,
      chunk_bytes: session.chunkBytes,
    })
    .returning("*");
  return toSession(row as SessionRow);
}

export async function findSession(db: Db, id: string, options: { forUpdate?: boolean } = {}): Promise<UploadSessionRecord | undefined> {
  const query = db<SessionRow>(SESSIONS).where({ id });
  if (options.forUpdate) query.forUpdate();
  const row = await query.first();
  return row ? toSession(row as SessionRow) : undefined;
}

/** The newest open session of a caller for the same model and file, active since `since`. */
export async function findResumable(
  db: Db,
  match: { modelId: string; startedBy: string; sizeBytes: number; sha256: string },
  since: Date,
): Promise<UploadSessionRecord | undefined> {
  const row = await db<SessionRow>(SESSIONS)
    .where({ model_id: match.modelId, started_by: match.startedBy, size_bytes: match.sizeBytes, sha256: match.sha256 })
    .where("updated_at", ">=", since)
    .orderBy("updated_at", "desc")
    .first();
  return row ? toSession(row as SessionRow) : undefined;
}

/** Keeps a session from expiring (a Start that resumes it). */
export async function touchSession(db: Db, id: string): Promise<void> {
  await db(SESSIONS).where({ id }).update({ updated_at: db.raw("now()") });
}

/** The chunk staged at exactly this offset, if any. */
export async function chunkAt(db: Db, uploadId: string, offset: number): Promise<StagedChunkRecord | undefined> {
  const row = await db<ChunkRow>(CHUNKS).where({ upload_id: uploadId, offset_bytes: offset }).first();
  return row ? toChunk(row as ChunkRow) : undefined;
}

/** Inside the transaction that holds the session's row lock: records a chunk and moves received_bytes on. */
export async function addChunk(trx: Tx, uploadId: string, chunkId: string, offset: number, sealed: SealedObject): Promise<number> {
  await trx(CHUNKS).insert({
    id: chunkId,
    upload_id: uploadId,
    offset_bytes: offset,
    size_bytes: sealed.size,
    sha256: sealed.sha256,
    storage_key: sealed.key,
    stored_bytes: sealed.storedSize,
    key_id: sealed.keyId,
    wrapped_key: sealed.wrapped,
  });
  const [row] = await trx(SESSIONS)
    .where({ id: uploadId })
    .update({ received_bytes: offset + sealed.size, updated_at: trx.raw("now()") })
    .returning("received_bytes");
  return Number((row as { received_bytes: number | string }).received_bytes);
}

/** A session's chunks in file order. */
export async function chunksOf(db: Db, uploadId: string): Promise<StagedChunkRecord[]> {
  const rows = await db<ChunkRow>(CHUNKS).where({ upload_id: uploadId }).orderBy("offset_bytes");
  return rows.map((r) => toChunk(r as ChunkRow));
}

/** Deletes sessions (their chunk rows go with them) and returns the staged objects' keys. */
export async function deleteSessions(trx: Tx, ids: string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const keys = (await trx(CHUNKS).whereIn("upload_id", ids).pluck("storage_key")) as string[];
  await trx(SESSIONS).whereIn("id", ids).delete();
  return keys;
}

/** Sessions with no append since `before`, oldest first. */
export async function idleSessions(db: Db, before: Date, limit: number): Promise<string[]> {
  return (await db(SESSIONS).where("updated_at", "<", before).orderBy("updated_at").limit(limit).pluck("id")) as string[];
}

/**
 * Staged objects of the sessions of one model (a withdrawal deletes them after its commit) or of
 * one user's models (erasure's purge list).
 */
export async function stagedKeysOf(db: Db, owner: { modelId: string } | { userId: string }): Promise<string[]> {
  const [column, value] = "modelId" in owner ? ["model_id", owner.modelId] : ["user_id", owner.userId];
  return (await db(CHUNKS)
    .join(SESSIONS, `${SESSIONS}.id`, `${CHUNKS}.upload_id`)
    .where(`${SESSIONS}.${column}`, value)
    .pluck(`${CHUNKS}.storage_key`)) as string[];
}

/** Whether a chunk row names the object (the orphan sweep keeps it). */
export async function isStagedKey(db: Db, key: string): Promise<boolean> {
  return (await db(CHUNKS).where({ storage_key: key }).first("id")) !== undefined;
}
