import { VoiceModelRow } from "../db/models/voice-model-row";
import type { Db, Tx } from "../db/transaction";
import type { Status } from "./constants";
import type { ListCursor } from "./paging";
import { toRecord, type VoiceModelRecord } from "./voice-model";

/** Storage of voice models: every query the domain runs, none of its rules. */

export async function findModel(db: Db, id: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(db).findById(id);
  return row ? toRecord(row) : undefined;
}

export async function findModelForUpdate(trx: Tx, id: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(trx).findById(id).forUpdate();
  return row ? toRecord(row) : undefined;
}

export async function findActiveModel(db: Db, userId: string): Promise<VoiceModelRecord | undefined> {
  const row = await VoiceModelRow.query(db)
    .where({ user_id: userId, is_active: true })
    .whereNull("deleted_at")
    .first();
  return row ? toRecord(row) : undefined;
}

/** A user's live (not deleted) models, optionally of one status and without some ids. */
export async function liveModels(db: Db, userId: string, options: { status?: Status; excludeIds?: string[] } = {}): Promise<VoiceModelRecord[]> {
  const query = VoiceModelRow.query(db).where("user_id", userId).whereNull("deleted_at");
  if (options.status) query.where("status", options.status);
  if (options.excludeIds?.length) query.whereNotIn("id", options.excludeIds);
  return (await query).map(toRecord);
}

export async function findByTrainingJob(trx: Tx, userId: string, trainingJobId: string) {
  const row = await VoiceModelRow.query(trx).where({ user_id: userId, training_job_id: trainingJobId }).first();
  return row ? toRecord(row) : undefined;
}

/**
 * Locks the user's owner row (creating it on first use). Every write that can change which
 * model is active takes this lock first, so such writes for one user run one after another.
 */
export async function lockOwner(trx: Tx, userId: string): Promise<void> {
  await trx.raw(
    `INSERT INTO model_owners (user_id) VALUES (?)
     ON CONFLICT (user_id) DO UPDATE SET user_id = excluded.user_id`,
    [userId],
  );
}

export type NewModelRow = Omit<Partial<VoiceModelRow>, "id" | "created_at" | "updated_at" | "version"> &
  Pick<VoiceModelRow, "user_id" | "provider" | "model_path">;

export async function insertModel(trx: Tx, row: NewModelRow): Promise<VoiceModelRecord> {
  return toRecord(await VoiceModelRow.query(trx).insertAndFetch(row as Partial<VoiceModelRow>));
}

/** Applies changes to one model, bumping its version and updated_at. */
export async function patchModel(trx: Tx, id: string, changes: Partial<VoiceModelRow>): Promise<VoiceModelRecord> {
  const row = await VoiceModelRow.query(trx).patchAndFetchById(id, {
    ...changes,
    version: VoiceModelRow.raw("version + 1") as unknown as number,
    updated_at: VoiceModelRow.raw("now()") as unknown as Date,
  });
  return toRecord(row);
}

export interface ListFilters {
  userId: string;
  provider?: string;
  isActive?: boolean;
  minQualityMillis?: number;
  status?: string;
  showDeleted: boolean;
}

function filtered(db: Db, f: ListFilters) {
  const query = VoiceModelRow.query(db).where("user_id", f.userId);
  if (!f.showDeleted) query.whereNull("deleted_at");
  if (f.provider !== undefined) query.where("provider", f.provider);
  if (f.isActive !== undefined) query.where("is_active", f.isActive);
  if (f.minQualityMillis !== undefined) query.where("quality_score", ">=", f.minQualityMillis / 1000);
  if (f.status !== undefined) query.where("status", f.status);
  return query;
}

export async function listModels(
  db: Db,
  filters: ListFilters,
  page: { limit: number; offset: number; after?: ListCursor },
): Promise<{ models: VoiceModelRecord[]; total: number }> {
  const rowsQuery = filtered(db, filters)
    .orderBy([
      { column: "is_active", order: "desc" },
      { column: "quality_score", order: "desc" },
      { column: "created_at", order: "desc" },
      { column: "id", order: "desc" },
    ])
    .limit(page.limit)
    .offset(page.offset);
  if (page.after) {
    const a = page.after;
    // Every sort key is descending, so "after" is a plain row comparison.
    rowsQuery.whereRaw("(is_active, quality_score, created_at, id) < (?, ?::numeric, ?::timestamptz, ?::uuid)", [
      a.isActive,
      (a.qualityMillis / 1000).toFixed(3),
      new Date(a.createdAtMs).toISOString(),
      a.id,
    ]);
  }
  const [rows, count] = await Promise.all([
    rowsQuery,
    filtered(db, filters).count("* as total").first() as unknown as Promise<{ total: number }>,
  ]);
  return { models: rows.map(toRecord), total: Number(count.total) };
}
