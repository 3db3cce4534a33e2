import { AppError } from "../errors";
import type { Db, Tx } from "../db/transaction";
import type { ActivationChange, ActivationReason, Actor, ChangeLog } from "./model-events";

/**
 * The one owner of the activation_history table: one append-only row per change of a user's
 * active model, written in the transaction of the change (erasure removes a user's rows).
 */

export interface HistoryEntry {
  id: string;
  /** Orders a user's entries (newest is highest). */
  seq: number;
  userId: string;
  previousModelId: string | undefined;
  newModelId: string | undefined;
  reason: ActivationReason;
  actorId: string;
  requestId: string;
  undoneEntryId: string | undefined;
  createdAt: Date;
}

interface HistoryRow {
  id: string;
  seq: number | string;
  user_id: string;
  previous_model_id: string | null;
  new_model_id: string | null;
  reason: string;
  actor_id: string;
  request_id: string;
  undone_entry_id: string | null;
  created_at: Date;
}

/** The one place a row becomes a history entry. */
function toEntry(row: HistoryRow): HistoryEntry {
  return {
    id: row.id,
    seq: Number(row.seq),
    userId: row.user_id,
    previousModelId: row.previous_model_id ?? undefined,
    newModelId: row.new_model_id ?? undefined,
    reason: row.reason as ActivationReason,
    actorId: row.actor_id,
    requestId: row.request_id,
    undoneEntryId: row.undone_entry_id ?? undefined,
    createdAt: row.created_at,
  };
}

/**
 * Writes the history rows of a transaction's activation changes (those not written yet) and
 * returns them, after the guard: a model whose active state the transaction flipped with no
 * activation change naming it is a bug (INTERNAL), and the whole write rolls back.
 */
export async function writeHistory(trx: Tx, log: ChangeLog, actor: Actor): Promise<void> {
  const unrecorded = log.unrecordedActivations();
  if (unrecorded.length > 0) {
    const what = unrecorded.map((c) => `${c.kind} ${c.model.id}`).join(", ");
    throw new AppError("INTERNAL", `active model changed without an activation history record: ${what}`);
  }
  for (const change of log.activations) {
    // DeleteUserData erases the user's rows and writes none for them.
    if (change.entryId || log.erasure?.userId === change.userId) continue;
    change.entryId = (await insertEntry(trx, change, actor)).id;
  }
}

/** Appends one entry now (a rollback, whose reply carries it). */
export async function insertEntry(trx: Tx, change: ActivationChange, actor: Actor): Promise<HistoryEntry> {
  const [row] = (await trx("activation_history")
    .insert({
      user_id: change.userId,
      previous_model_id: change.fromModelId ?? null,
      new_model_id: change.toModelId ?? null,
      reason: change.reason,
      actor_id: actor.caller.userId,
      request_id: actor.requestId,
      undone_entry_id: change.undoneEntryId ?? null,
    })
    .returning("*")) as HistoryRow[];
  return toEntry(row);
}

/** DeleteUserData (with log.erasure set, so none is written for them later in the transaction). */
export async function eraseHistoryOfUser(trx: Tx, userId: string): Promise<void> {
  await trx("activation_history").where({ user_id: userId }).delete();
}

/** Withdrawal: the entries naming a model go (entries that undid one of them forget which). */
export async function eraseModelFromHistory(trx: Tx, modelId: string): Promise<void> {
  const naming = trx("activation_history").where("previous_model_id", modelId).orWhere("new_model_id", modelId).select("id");
  await trx("activation_history").whereIn("undone_entry_id", naming).update({ undone_entry_id: null });
  await trx("activation_history").where("previous_model_id", modelId).orWhere("new_model_id", modelId).delete();
}

/** A user's entries newest first, after `beforeSeq` when given. */

export async function listEntries(db: Db, userId: string, limit: number, beforeSeq?: number): Promise<HistoryEntry[]> {
  const query = db("activation_history").where({ user_id: userId }).orderBy("seq", "desc").limit(limit);
  if (beforeSeq !== undefined) query.where("seq", "<", beforeSeq);
  return ((await query) as HistoryRow[]).map(toEntry);
}

export async function findEntry(db: Db, userId: string, id: string): Promise<HistoryEntry | undefined> {
  const row = (await db("activation_history").where({ id, user_id: userId }).first()) as HistoryRow | undefined;
  return row ? toEntry(row) : undefined;
}

/** The user's newest entry before `beforeSeq` (or the newest of all). */
export async function entryBefore(db: Db, userId: string, beforeSeq?: number): Promise<HistoryEntry | undefined> {
  return (await listEntries(db, userId, 1, beforeSeq))[0];
}

/** The user's oldest entry after `afterSeq`. */
export async function entryAfter(db: Db, userId: string, afterSeq: number): Promise<HistoryEntry | undefined> {
  const row = (await db("activation_history").where({ user_id: userId }).where("seq", ">", afterSeq).orderBy("seq").first()) as HistoryRow | undefined;
  return row ? toEntry(row) : undefined;
}
