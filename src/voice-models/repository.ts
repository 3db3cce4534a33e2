import { VoiceModelRow } from "../db/models/voice-model-row";
import type { Db, Tx } from "../db/transaction";
import { readRows } from "../db/read-rows";
import { LIMITS, type Provider, type Status } from "./constants";
import type { ChangeLog, ModelChangeKind } from "./model-events";
import type { ListCursor, ListOrder } from "./paging";
import type { QualityComponents, VoiceModelRecord } from "./voice-model";

/**
 * The one owner of the voice_models table: every read and write of a model row, in any room,
 * goes through these functions, none of the domain's rules. Every write records the rows it
 * changed in the transaction's ChangeLog, so the change listeners see all of them.
 */

/** The fields a write sets, in the domain's terms (mapped to columns by toColumns only). */
export interface ModelPatch {
  provider?: Provider;
  modelPath?: string;
  sampleRate?: number;
  qualityScore?: number;
  /** null clears them (a new overall score no longer matches the old components). */
  qualityComponents?: QualityComponents | null;
  metadata?: Record<string, unknown>;
  isActive?: boolean;
  status?: Status;
  trainingJobId?: string | null;
  sizeBytes?: number | null;
  /** The stored file (model_files) once the service holds the model's file. */
  fileId?: string | null;
  deletedAt?: Date | null;
  /** The model it was trained from; the caller has checked it is the same user's. */
  parentModelId?: string | null;
  /** The consent record covering it; the consent room has checked it is the user's. */
  consentId?: string | null;
}

export interface NewModel extends ModelPatch {
  /** Given when the caller stores the model's file under it before the row exists, or restores it. */
  id?: string;
  /**
   * Given only by a restore keeping a model's number (free for this user: modelNumberTaken).
   * Without it the database gives the user's next number (trigger voice_models_number, under
   * the model_owners row the create holds).
   */
  modelNumber?: number;
  userId: string;
  provider: Provider;
  modelPath: string;
  createdAt?: Date;
}

const COLUMNS = {
  id: "id",
  userId: "user_id",
  provider: "provider",
  modelPath: "model_path",
  sampleRate: "sample_rate",
  qualityScore: "quality_score",
  metadata: "metadata",
  isActive: "is_active",
  status: "status",
  trainingJobId: "training_job_id",
  sizeBytes: "size_bytes",
  fileId: "file_id",
  deletedAt: "deleted_at",
  createdAt: "created_at",
  modelNumber: "model_number",
  parentModelId: "parent_model_id",
  consentId: "consent_id",
} as const satisfies Record<Exclude<keyof NewModel, "qualityComponents">, keyof VoiceModelRow>;

/** The one place a row becomes a domain object (toColumns is the way there). */
function toRecord(row: VoiceModelRow): VoiceModelRecord {
  const hasComponents = row.similarity !== null && row.similarity !== undefined;
  return {
    id: row.id,
    userId: row.user_id,
    provider: row.provider as Provider,
    modelPath: row.model_path,
    sampleRate: row.sample_rate,
    qualityScore: Number(row.quality_score),
    qualityComponents: hasComponents
      ? {
          similarity: Number(row.similarity),
          naturalness: Number(row.naturalness),
          clarity: Number(row.clarity),
          consistency: Number(row.consistency),
        }
      : undefined,
    metadata: row.metadata ?? {},
    isActive: row.is_active,
    status: row.status as Status,
    trainingJobId: row.training_job_id ?? undefined,
    version: row.version,
    sizeBytes: row.size_bytes ?? undefined,
    hasFile: row.file_id !== null && row.file_id !== undefined,
    modelNumber: row.model_number,
    parentModelId: row.parent_model_id ?? undefined,
    consentId: row.consent_id ?? undefined,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deletedAt: row.deleted_at ?? undefined,
  };
}

/** The one place a patch becomes columns (toRecord is the way back). */
function toColumns(patch: ModelPatch | NewModel): Partial<VoiceModelRow> {
  const row: Record<string, unknown> = {};
  for (const [field, column] of Object.entries(COLUMNS)) {
    const value = (patch as Record<string, unknown>)[field];
    if (value !== undefined) row[column] = value;
  }
  if (patch.qualityComponents !== undefined) {
    const c = patch.qualityComponents;
    Object.assign(row, { similarity: c?.similarity ?? null, naturalness: c?.naturalness ?? null, clarity: c?.clarity ?? null, consistency: c?.consistency ?? null });
  }
  return row as Partial<VoiceModelRow>;
}

export async function findModel(db: Db, id: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(db).findById(id);
  return row ? toRecord(row) : undefined;
}

export async function findModelForUpdate(trx: Tx, id: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(trx).findById(id).forUpdate();
  return row ? toRecord(row) : undefined;
}

// The hot reads (GetActiveVoiceModel, ListVoiceModels) are plain SQL: building them through
// Objection and hydrating its model instances cost more CPU per call than the query itself.
// The one-active partial unique index answers it (at most one row).
const ACTIVE_SQL = `SELECT * FROM voice_models WHERE user_id = ? AND is_active = ? AND deleted_at IS NULL`;

export async function findActiveModel(db: Db, userId: string): Promise<VoiceModelRecord | undefined> {
  const rows = await readRows<VoiceModelRow>(db, ACTIVE_SQL, [userId, true]);
  return rows.length > 0 ? toRecord(rows[0]) : undefined;
}

/** A user's live (not deleted) models, optionally of one status and without some ids. */
export async function liveModels(
  db: Db,
  userId: string,
  options: { status?: Status; excludeIds?: string[]; forUpdate?: boolean } = {},
): Promise<VoiceModelRecord[]> {
  const query = VoiceModelRow.query(db).where("user_id", userId).whereNull("deleted_at");
  if (options.status) query.where("status", options.status);
  if (options.excludeIds?.length) query.whereNotIn("id", options.excludeIds);
  if (options.forUpdate) query.forUpdate();
  return (await query).map(toRecord);
}

/** Read FOR SHARE: a concurrent writer holding the row FOR UPDATE finishes first. */
export async function findModelForShare(trx: Tx, id: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(trx).findById(id).forShare();
  return row ? toRecord(row) : undefined;
}

export async function findModels(db: Db, ids: readonly string[]): Promise<VoiceModelRecord[]> {
  if (ids.length === 0) return [];
  return (await VoiceModelRow.query(db).whereIn("id", ids)).map(toRecord);
}

/** All of a user's models, oldest first; soft-deleted ones too when asked. */
export async function userModels(db: Db, userId: string, options: { includeDeleted: boolean }): Promise<VoiceModelRecord[]> {
  const query = VoiceModelRow.query(db).where({ user_id: userId }).orderBy([{ column: "created_at" }, { column: "id" }]);
  if (!options.includeDeleted) query.whereNull("deleted_at");
  return (await query).map(toRecord);
}

/** Ids of models soft-deleted before `cutoff` (the purge's work list). */
export async function deletedBefore(db: Db, cutoff: Date, limit: number): Promise<string[]> {
  return (await db("voice_models").where("deleted_at", "<", cutoff).limit(limit).pluck("id")) as string[];
}

/** The id of the model's stored file, if the service holds one (live or soft-deleted model alike). */
export async function fileIdOfModel(db: Db, modelId: string): Promise<string | undefined> {
  const row = await db("voice_models").where({ id: modelId }).first("file_id");
  return row?.file_id ?? undefined;
}

/** A subquery of every file id some model row refers to (for sweeps that run as one statement). */
export function referencedFileIds(db: Db) {
  return db("voice_models").whereNotNull("file_id").select("file_id");
}

/** A subquery of the ids of every live model, or one user's (for joins of other rooms' tables). */
export function liveModelIds(db: Db, userId?: string) {
  const query = db("voice_models").whereNull("deleted_at").select("id");
  if (userId !== undefined) query.where("user_id", userId);
  return query;
}

/** Withdrawal's tombstone: the ids of models deleted for good with their consent. */
export async function recordRevoked(trx: Tx, modelId: string): Promise<void> {
  await trx("revoked_voice_models").insert({ model_id: modelId }).onConflict("model_id").ignore();
}

/** Which of these model ids were withdrawn (a restore does not bring them back). */
export async function revokedAmong(db: Db, modelIds: readonly string[]): Promise<Set<string>> {
  if (modelIds.length === 0) return new Set();
  return new Set((await db("revoked_voice_models").whereIn("model_id", modelIds).pluck("model_id")) as string[]);
}

/** The model a consent record covers (live or soft-deleted), if any. */
export async function findModelByConsent(db: Db, consentId: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(db).where({ consent_id: consentId }).first();
  return row ? toRecord(row) : undefined;
}

/** The models some consent records cover, by consent id. */
export async function modelIdsByConsent(db: Db, consentIds: readonly string[]): Promise<Map<string, string>> {
  if (consentIds.length === 0) return new Map();
  const rows = (await db("voice_models").whereIn("consent_id", consentIds).select("id", "consent_id")) as Array<{ id: string; consent_id: string }>;
  return new Map(rows.map((r) => [r.consent_id, r.id]));
}

/** Completed live models without consent, oldest first, after a (created_at, id) position. */
export async function modelsMissingConsent(
  db: Db,
  filter: { userId?: string },
  limit: number,
  after?: { createdAtMs: number; id: string },
): Promise<{ models: VoiceModelRecord[]; total: number; active: number }> {
  const base = () => {
    const q = db("voice_models").whereNull("deleted_at").where("status", "completed").whereNull("consent_id");
    if (filter.userId !== undefined) q.where("user_id", filter.userId);
    return q;
  };
  const page = base();
  if (after) page.whereRaw("(created_at, id) > (?::timestamptz, ?::uuid)", [new Date(after.createdAtMs).toISOString(), after.id]);
  const [rows, [counts]] = await Promise.all([
    page.orderBy([{ column: "created_at" }, { column: "id" }]).limit(limit).select("*"),
    base().select(db.raw("count(*)::int AS total"), db.raw("count(*) FILTER (WHERE is_active)::int AS active")),
  ]);
  return { models: (rows as VoiceModelRow[]).map(toRecord), total: Number(counts.total), active: Number(counts.active) };
}

export async function findByTrainingJob(trx: Tx, userId: string, trainingJobId: string) {
  const row = await VoiceModelRow.query(trx).where({ user_id: userId, training_job_id: trainingJobId }).first();
  return row ? toRecord(row) : undefined;
}

/**
 * Locks the user's owner row (creating it on first use). Every write that can change which
 * model is active takes this lock first, so such writes for one user run one after another.
 * The row also holds the user's model number counter (last_model_number), which the database
 * advances on every insert into voice_models.
 */
export async function lockOwner(trx: Tx, userId: string): Promise<void> {
  await trx.raw(
    `INSERT INTO model_owners (user_id) VALUES (?)
     ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id`,
    [userId],
  );
}

/** Drops the user's owner row (erasure, once none of their models remain). */
export async function forgetOwner(trx: Tx, userId: string): Promise<void> {
  await trx("model_owners").where({ user_id: userId }).delete();
}

/** Inserts a model; recorded as "created". */
export async function insertModel(trx: Tx, log: ChangeLog, model: NewModel): Promise<VoiceModelRecord> {
  return log.add("created", toRecord(await VoiceModelRow.query(trx).insertAndFetch(toColumns(model))), false, false);
}

/**
 * Applies a patch to one model, bumping its version and updated_at; recorded as `kind` (what
 * the write means: "deleted" for a soft delete, "activated", ...).
 */
export async function patchModel(trx: Tx, log: ChangeLog, id: string, patch: ModelPatch, kind: ModelChangeKind = "updated"): Promise<VoiceModelRecord> {
  // A patch that can change which model is active notes whether this one was (the history guard).
  // So does one that can make it (no longer) a live completed model (the consent guard).
  const mayChangeActive = patch.isActive !== undefined || patch.deletedAt !== undefined || patch.status !== undefined;
  const before = mayChangeActive ? await trx("voice_models").where({ id }).first("is_active", "deleted_at", "status") : undefined;
  const row = await VoiceModelRow.query(trx).patchAndFetchById(id, {
    ...toColumns(patch),
    version: VoiceModelRow.raw("version + 1") as unknown as number,
    updated_at: VoiceModelRow.raw("now()") as unknown as Date,
  });
  const wasCompleted = before ? before.status === "completed" && !before.deleted_at : undefined;
  return log.add(kind, toRecord(row), before ? before.is_active && !before.deleted_at : undefined, wasCompleted);
}

/** An SQL condition on the alias `v` (voice_models) with its bindings. */
export interface ModelCondition {
  sql: string;
  bindings: ReadonlyArray<string | number>;
}

export async function countWhere(db: Db, cond: ModelCondition): Promise<number> {
  const { rows } = await db.raw(`SELECT count(*)::int AS n FROM voice_models v WHERE ${cond.sql}`, [...cond.bindings]);
  return Number(rows[0].n);
}

/** Models matching `cond`, oldest first. */
export async function findWhere(db: Db, cond: ModelCondition, limit?: number): Promise<VoiceModelRecord[]> {
  const { rows } = await db.raw(
    `SELECT v.* FROM voice_models v WHERE ${cond.sql} ORDER BY v.created_at, v.id${limit === undefined ? "" : " LIMIT ?"}`,
    limit === undefined ? [...cond.bindings] : [...cond.bindings, limit],
  );
  return (rows as VoiceModelRow[]).map(toRecord);
}

/**
 * Soft-deletes up to `limit` models matching `cond`, oldest first, each recorded as "deleted".
 * SKIP LOCKED leaves rows another writer holds for a later call; the condition is re-checked
 * on the locked row, so a model that changed meanwhile is left alone.
 */
export async function softDeleteWhere(trx: Tx, log: ChangeLog, cond: ModelCondition, limit: number): Promise<VoiceModelRecord[]> {
  const { rows } = await trx.raw(
    `WITH batch AS (
       SELECT v.id FROM voice_models v WHERE ${cond.sql}
       ORDER BY v.created_at, v.id LIMIT ? FOR UPDATE SKIP LOCKED)
     UPDATE voice_models m SET deleted_at = now(), updated_at = now(), version = m.version + 1
       FROM batch WHERE m.id = batch.id
     RETURNING m.*`,
    [...cond.bindings, limit],
  );
  return (rows as VoiceModelRow[]).map((row) => log.add("deleted", toRecord(row), row.is_active));
}

/**
 * Removes model rows for good (rows referring to them must be gone); each recorded as "purged".
 * Their children outside `ids` lose their parent first, each recorded as "updated" (the foreign
 * key's ON DELETE SET NULL would do it unseen by the listeners, so caches would keep the old
 * parent). The rows are locked first: a create naming one of them as parent (which holds it FOR
 * SHARE) commits before, and its child is then found here.
 */
export async function deleteModels(trx: Tx, log: ChangeLog, ids: readonly string[]): Promise<VoiceModelRecord[]> {
  if (ids.length === 0) return [];
  await trx("voice_models").whereIn("id", ids).forUpdate().select("id");
  const orphaned = (await trx("voice_models")
    .whereIn("parent_model_id", ids)
    .whereNotIn("id", ids)
    .update({ parent_model_id: null, version: trx.raw("version + 1"), updated_at: trx.raw("now()") })
    .returning("*")) as VoiceModelRow[];
  for (const row of orphaned) log.add("updated", toRecord(row));
  const rows = (await trx("voice_models").whereIn("id", ids).delete().returning("*")) as VoiceModelRow[];
  return rows.map((row) => log.add("purged", toRecord(row)));
}

/** Whether one of the user's models has this number (a restore keeps a number only when free). */
export async function modelNumberTaken(db: Db, userId: string, modelNumber: number): Promise<boolean> {
  return (await db("voice_models").where({ user_id: userId, model_number: modelNumber }).first("id")) !== undefined;
}

/*
 * Lineage: the links parent_model_id makes, followed by recursive CTEs (PostgreSQL and PGlite
 * alike), never across users. UNION ALL with a depth bound: the links form trees (a parent exists
 * before its child), and the bound also ends a walk on any cycle bad data could hold.
 */

/** Ancestors walked from model `?` up, depth 1 for the parent (at most `?` levels). */
const ANCESTORS_CTE = `up AS (
    SELECT v.*, 0 AS depth FROM voice_models v WHERE v.id = ?
    UNION ALL
    SELECT v.*, up.depth + 1 FROM voice_models v JOIN up ON v.id = up.parent_model_id AND v.user_id = up.user_id WHERE up.depth < ?)`;

/** Descendants walked from model `?` down, depth 1 for its children (at most `?` levels). */
const DESCENDANTS_CTE = `down AS (
    SELECT v.*, 0 AS depth FROM voice_models v WHERE v.id = ?
    UNION ALL
    SELECT v.*, down.depth + 1 FROM voice_models v JOIN down ON v.parent_model_id = down.id AND v.user_id = down.user_id WHERE down.depth < ?)`;

export interface Lineage {
  /** Root first, the model's parent last. */
  ancestors: VoiceModelRecord[];
  /** Breadth-first: by generation, then model_number. */
  descendants: VoiceModelRecord[];
  /** Either list was cut at `max`. */
  truncated: boolean;
}

/**
 * A model's ancestors (the `max` nearest) and descendants (the first `max` breadth-first),
 * soft-deleted ones included. One more than `max` is read to tell whether a list was cut.
 */
export async function lineageOf(db: Db, modelId: string, max: number = LIMITS.lineageMax): Promise<Lineage> {
  const [up, down] = await Promise.all([
    db.raw(`WITH RECURSIVE ${ANCESTORS_CTE} SELECT * FROM up WHERE depth > 0 ORDER BY depth`, [modelId, max + 1]),
    db.raw(`WITH RECURSIVE ${DESCENDANTS_CTE} SELECT * FROM down WHERE depth > 0 ORDER BY depth, model_number LIMIT ?`, [modelId, max + 1, max + 1]),
  ]);
  const ancestors = (up.rows as VoiceModelRow[]).map(toRecord);
  const descendants = (down.rows as VoiceModelRow[]).map(toRecord);
  const truncated = ancestors.length > max || descendants.length > max;
  return { ancestors: ancestors.slice(0, max).reverse(), descendants: descendants.slice(0, max), truncated };
}

export interface ListFilters {
  userId: string;
  provider?: string;
  isActive?: boolean;
  minQualityMillis?: number;
  status?: string;
  showDeleted: boolean;
  /** Only this model (the user's), its ancestors and descendants, as lineageOf finds them. */
  lineageOf?: string;
  /** Only completed models without (true) or with (false) a consent record. */
  consentMissing?: boolean;
}

/** The WHERE clause of a list's filters (both its page and its count), with its bindings. */
function listWhere(f: ListFilters): { sql: string; bindings: Array<string | number | boolean> } {
  let sql = "user_id = ?";
  const bindings: Array<string | number | boolean> = [f.userId];
  const and = (condition: string, value: string | number | boolean) => {
    sql += ` AND ${condition}`;
    bindings.push(value);
  };
  if (!f.showDeleted) sql += " AND deleted_at IS NULL";
  if (f.provider !== undefined) and("provider = ?", f.provider);
  if (f.isActive !== undefined) and("is_active = ?", f.isActive);
  if (f.minQualityMillis !== undefined) and("quality_score >= ?", f.minQualityMillis / 1000);
  if (f.status !== undefined) and("status = ?", f.status);
  if (f.consentMissing !== undefined) sql += f.consentMissing ? " AND status = 'completed' AND consent_id IS NULL" : " AND status = 'completed' AND consent_id IS NOT NULL";
  if (f.lineageOf !== undefined) {
    // The model itself (depth 0 of both walks), its `max` nearest ancestors and first `max` descendants.
    const max = LIMITS.lineageMax;
    sql += ` AND id IN (WITH RECURSIVE ${ANCESTORS_CTE}, ${DESCENDANTS_CTE}
      SELECT id FROM up UNION ALL (SELECT id FROM down ORDER BY depth, model_number LIMIT ?))`;
    bindings.push(f.lineageOf, max, f.lineageOf, max, max + 1);
  }
  return { sql, bindings };
}

/** How a cursor's value for each sort key is bound. */
const SORT_KEYS = {
  is_active: { cast: "?", value: (a: ListCursor) => a.isActive },
  quality_score: { cast: "?::numeric", value: (a: ListCursor) => (a.qualityMillis / 1000).toFixed(3) },
  created_at: { cast: "?::timestamptz", value: (a: ListCursor) => new Date(a.createdAtMs).toISOString() },
  id: { cast: "?::uuid", value: (a: ListCursor) => a.id },
} as const;
type SortKey = keyof typeof SORT_KEYS;

/** Each order's keys, all in one direction (so "after a row" is one row comparison). */
const ORDER_KEYS: Record<ListOrder, { keys: SortKey[]; desc: boolean }> = {
  default: { keys: ["is_active", "quality_score", "created_at", "id"], desc: true },
  "created_at asc": { keys: ["created_at", "id"], desc: false },
  "created_at desc": { keys: ["created_at", "id"], desc: true },
  "quality_score asc": { keys: ["quality_score", "created_at", "id"], desc: false },
  "quality_score desc": { keys: ["quality_score", "created_at", "id"], desc: true },
};

export async function listModels(
  db: Db,
  filters: ListFilters,
  page: { limit: number; offset: number; after?: ListCursor; order: ListOrder },
): Promise<{ models: VoiceModelRecord[]; total: number }> {
  const where = listWhere(filters);
  const { keys, desc } = ORDER_KEYS[page.order];
  let rowsSql = `SELECT * FROM voice_models WHERE ${where.sql}`;
  const rowsBindings = [...where.bindings];
  if (page.after) {
    const after = page.after;
    rowsSql += ` AND (${keys.join(", ")}) ${desc ? "<" : ">"} (${keys.map((k) => SORT_KEYS[k].cast).join(", ")})`;
    rowsBindings.push(...keys.map((k) => SORT_KEYS[k].value(after)));
  }
  rowsSql += ` ORDER BY ${keys.map((k) => (desc ? `${k} DESC` : k)).join(", ")} LIMIT ?`;
  rowsBindings.push(page.limit);
  if (page.offset > 0) {
    rowsSql += " OFFSET ?";
    rowsBindings.push(page.offset);
  }
  const [rows, count] = await Promise.all([
    readRows<VoiceModelRow>(db, rowsSql, rowsBindings),
    readRows<{ total: unknown }>(db, `SELECT count(*) AS total FROM voice_models WHERE ${where.sql}`, where.bindings),
  ]);
  return { models: rows.map(toRecord), total: Number(count[0].total) };
}

/** Figures over all models, for metrics and alerts. */

/** size_bytes of models whose file the service does not hold (their file lives elsewhere). */
export async function declaredBytes(db: Db): Promise<number> {
  const { rows } = await db.raw(`SELECT coalesce(sum(size_bytes), 0)::float8 AS bytes FROM voice_models WHERE file_id IS NULL`);
  return Number(rows[0].bytes);
}

/** Recorded model sizes by provider and whether soft-deleted. */
export async function sizesByProvider(db: Db): Promise<Array<{ provider: string; deleted: boolean; bytes: number }>> {
  const { rows } = await db.raw(
    `SELECT provider, (deleted_at IS NOT NULL) AS deleted, coalesce(sum(size_bytes), 0)::float8 AS bytes FROM voice_models GROUP BY 1, 2`,
  );
  return (rows as Array<{ provider: string; deleted: boolean; bytes: number }>).map((r) => ({ ...r, bytes: Number(r.bytes) }));
}

/** How many live completed models there are and their average quality score (0 when none). */
export async function completedQuality(db: Db): Promise<{ count: number; average: number }> {
  const { rows } = await db.raw(
    `SELECT count(*)::int AS n, coalesce(avg(quality_score), 0)::float8 AS avg FROM voice_models WHERE deleted_at IS NULL AND status = 'completed'`,
  );
  return { count: Number(rows[0].n), average: Number(rows[0].avg) };
}

export interface UserModelFigures {
  totalModels: number;
  activeModels: number;
  averageQualityScore: number;
  /** Distinct stored files: models sharing one file (same model_path) count it once. */
  storedBytes: number;
  byProvider: Record<string, number>;
}

/** Counts over one user's live models (analytics). */
export async function userModelFigures(db: Db, userId: string): Promise<UserModelFigures> {
  const live = () => db("voice_models").where("user_id", userId).whereNull("deleted_at");
  const [[counts], providers, [storage]] = await Promise.all([
    live().select(
      db.raw("count(*) as total_models"),
      db.raw("count(*) filter (where is_active) as active_models"),
      db.raw("coalesce(avg(quality_score), 0) as average_quality_score"),
    ) as unknown as Promise<{ total_models: number; active_models: number; average_quality_score: number }[]>,
    live().groupBy("provider").select("provider", db.raw("count(*) as n")) as unknown as Promise<{ provider: string; n: number }[]>,
    db
      .from(live().distinctOn("model_path").select("model_path", "size_bytes").whereNotNull("size_bytes").orderBy("model_path").as("files"))
      .select(db.raw("coalesce(sum(size_bytes), 0) as bytes")) as unknown as Promise<{ bytes: number }[]>,
  ]);
  return {
    totalModels: Number(counts.total_models),
    activeModels: Number(counts.active_models),
    averageQualityScore: Number(counts.average_quality_score),
    storedBytes: Number(storage.bytes),
    byProvider: Object.fromEntries(providers.map((p) => [p.provider, Number(p.n)])),
  };
}
