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

/** Ends shares of a model: the given users', or all when targets is undefined. */
export async function deleteShares(trx: Tx, modelId: string, targets?: string[]): Promise<number> {
  const query = trx("model_shares").where("model_id", modelId);
  if (targets) query.whereIn("target_user_id", targets);
  return affectedRows(await query.delete());
}

/** Rows a delete touched: pg gives a number, knex-pglite the raw result. */
export function affectedRows(result: unknown): number {
  if (typeof result === "number") return result;
  const r = result as { rowCount?: number; affectedRows?: number };
  return Number(r?.rowCount ?? r?.affectedRows ?? 0);
}

/** Ends every share of these models (they were deleted). */
export async function deleteSharesOfModels(trx: Tx, modelIds: string[]): Promise<number> {
  if (modelIds.length === 0) return 0;
  return affectedRows(await trx("model_shares").whereIn("model_id", modelIds).delete());
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
