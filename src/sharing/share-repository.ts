import type { Db, Tx } from "../db/transaction";
import * as modelRepo from "../voice-models/repository";

export const PERMISSIONS = ["view", "use"] as const;
/** "view": read the model; "use": also usage stats, compare and synthesis. */
export type SharePermission = (typeof PERMISSIONS)[number];

export interface ShareRecord {
  modelId: string;
  ownerId: string;
  targetUserId: string;
  permission: SharePermission;
  sharedAt: Date;
}

interface ShareRow {
  model_id: string;
  owner_id: string;
  target_user_id: string;
  permission: SharePermission;
  created_at: Date;
}

export const toShare = (row: ShareRow): ShareRecord => ({
  modelId: row.model_id,
  ownerId: row.owner_id,
  targetUserId: row.target_user_id,
  permission: row.permission,
  sharedAt: row.created_at,
});

/** The permission a user holds on a model through a share, if any. */
export async function findPermission(db: Db, modelId: string, userId: string): Promise<SharePermission | undefined> {
  const row = await db<ShareRow>("model_shares").where({ model_id: modelId, target_user_id: userId }).first("permission");
  return row?.permission;
}

/** Grants (or changes) shares; returns them as stored. */
export async function upsertShares(
  trx: Tx,
  share: { modelId: string; ownerId: string; permission: SharePermission },
  targets: string[],
): Promise<ShareRecord[]> {
  const rows = await trx("model_shares")
    .insert(targets.map((t) => ({ model_id: share.modelId, owner_id: share.ownerId, target_user_id: t, permission: share.permission })))
    .onConflict(["model_id", "target_user_id"])
    .merge({ permission: share.permission, created_at: trx.raw("now()") })
    .returning("*");
  return (rows as ShareRow[]).map(toShare);
}

/** Ends shares of a model: the given users', or all when targets is undefined; returns whose ended. */
export async function deleteShares(trx: Tx, modelId: string, targets?: string[]): Promise<string[]> {
  const query = trx("model_shares").where("model_id", modelId);
  if (targets) query.whereIn("target_user_id", targets);
  return ((await query.delete().returning("target_user_id")) as Array<Pick<ShareRow, "target_user_id">>).map((r) => r.target_user_id);
}

/** Ends every share of the models (they were deleted); returns the shares that ended. */
export async function deleteSharesOfModels(trx: Tx, modelIds: string[]): Promise<Array<Pick<ShareRecord, "modelId" | "ownerId" | "targetUserId">>> {
  if (modelIds.length === 0) return [];
  const rows = (await trx("model_shares").whereIn("model_id", modelIds).delete().returning(["model_id", "owner_id", "target_user_id"])) as ShareRow[];
  return rows.map((r) => ({ modelId: r.model_id, ownerId: r.owner_id, targetUserId: r.target_user_id }));
}

/** Ids of the live models shared with a user. */
export async function sharedModelIds(db: Db, userId: string): Promise<string[]> {
  return (await db("model_shares").where("target_user_id", userId).whereIn("model_id", modelRepo.liveModelIds(db)).pluck("model_id")) as string[];
}

/** Live models shared with a user, newest share first, keyset-paged on (created_at, model_id). */
export async function listSharedWith(
  db: Db,
  userId: string,
  limit: number,
  after?: { sharedAtMs: number; modelId: string },
): Promise<Array<{ share: ShareRecord; modelId: string }>> {
  const query = db<ShareRow>("model_shares as s")
    .where("s.target_user_id", userId)
    .whereIn("s.model_id", modelRepo.liveModelIds(db))
    .select("s.*")
    .orderBy([
      { column: "s.created_at", order: "desc" },
      { column: "s.model_id", order: "desc" },
    ])
    .limit(limit);
  if (after) {
    query.whereRaw("(s.created_at, s.model_id) < (?::timestamptz, ?::uuid)", [new Date(after.sharedAtMs).toISOString(), after.modelId]);
  }
  const rows = (await query) as ShareRow[];
  return rows.map((row) => ({ share: toShare(row), modelId: row.model_id }));
}

/** An owner's shares of live models (one model's when modelId is set), newest first, from an offset. */
export async function listSharesBy(db: Db, ownerId: string, modelId: string | undefined, limit: number, offset: number): Promise<ShareRecord[]> {
  const query = db<ShareRow>("model_shares as s")
    .where("s.owner_id", ownerId)
    .whereIn("s.model_id", modelRepo.liveModelIds(db, ownerId))
    .select("s.*")
    .orderBy([
      { column: "s.created_at", order: "desc" },
      { column: "s.model_id", order: "desc" },
      { column: "s.target_user_id", order: "desc" },
    ])
    .limit(limit)
    .offset(offset);
  if (modelId) query.where("s.model_id", modelId);
  return ((await query) as ShareRow[]).map(toShare);
}
