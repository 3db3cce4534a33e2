import type { Db, Tx } from "../db/transaction";
import { reviveModel, type VoiceModelRecord } from "../voice-models/voice-model";

/** The one owner of voice_model_events and voice_model_event_retention. */

export const EVENT_TYPES = [
  "created",
  "updated",
  "status_changed",
  "activated",
  "deactivated",
  "deleted",
  "undeleted",
  "restored",
  "purged",
  "shared",
  "share_revoked",
  "file_stored",
  "erased",
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** An event to append (its id and time are the database's). */
export interface NewEvent {
  type: EventType;
  userId: string;
  modelId?: string;
  model?: VoiceModelRecord;
  /** Users besides the owner the event is for (the targets of a share). */
  audience?: readonly string[];
}

export interface StoredEvent {
  id: bigint;
  at: Date;
  type: EventType;
  userId: string;
  modelId: string | undefined;
  model: VoiceModelRecord | undefined;
  audience: readonly string[];
}

// Taken just before the insert and held until commit: an id is handed out only once every
// transaction that took one before has committed (or rolled back), so ids grow in commit order.
// One key for the whole service (the value means nothing beyond being ours).
const OUTBOX_LOCK_KEY = 7_311_024_918;

export async function insertEvents(trx: Tx, events: readonly NewEvent[]): Promise<void> {
  if (events.length === 0) return;
  await trx.raw(`SELECT pg_advisory_xact_lock(?)`, [OUTBOX_LOCK_KEY]);
  await trx("voice_model_events").insert(
    events.map((e) => ({
      type: e.type,
      user_id: e.userId,
      model_id: e.modelId ?? e.model?.id ?? null,
      model: e.model ? JSON.stringify(e.model) : null,
      audience: e.audience ? [...e.audience] : [],
    })),
  );
}

interface EventRow {
  event_id: string;
  at: Date;
  type: EventType;
  user_id: string;
  model_id: string | null;
  model: Record<string, unknown> | string | null;
  audience: string[] | null;
}

function toEvent(row: EventRow): StoredEvent {
  const model = typeof row.model === "string" ? (JSON.parse(row.model) as Record<string, unknown>) : row.model;
  return {
    id: BigInt(row.event_id),
    at: row.at,
    type: row.type,
    userId: row.user_id,
    modelId: row.model_id ?? undefined,
    model: model ? reviveModel(model) : undefined,
    audience: row.audience ?? [],
  };
}

/**
 * Who a read is for: every event, one owner's, or a user's own plus those of models shared with
 * them. userHash matches the user's "erased" event (erasure writes the hash in place of the id).
 */
export type EventScope =
  | { kind: "all" }
  | { kind: "owner"; userId: string; userHash: string }
  | { kind: "user"; userId: string; userHash: string; sharedModelIds: readonly string[] };

/** Events after `afterId`, oldest first, that `scope` may concern (the caller filters again). */
export async function eventsAfter(db: Db, afterId: bigint, scope: EventScope, limit: number): Promise<StoredEvent[]> {
  // The id as text keeps all 64 bits (the connection parses int8 as a JS number); a distinct
  // name keeps ORDER BY on the bigint column.
  const base = `SELECT id::text AS event_id, at, type, user_id, model_id, model, audience FROM voice_model_events WHERE id > ?`;
  const after = afterId.toString();
  let sql: string;
  let bindings: unknown[];
  switch (scope.kind) {
    case "all":
      [sql, bindings] = [`${base} ORDER BY id LIMIT ?`, [after, limit]];
      break;
    case "owner":
      [sql, bindings] = [`${base} AND user_id IN (?, ?) ORDER BY id LIMIT ?`, [after, scope.userId, scope.userHash, limit]];
      break;
    case "user":
      [sql, bindings] = [
        `${base} AND (user_id IN (?, ?) OR audience @> ARRAY[?]::varchar[] OR model_id = ANY(?::uuid[])) ORDER BY id LIMIT ?`,
        [after, scope.userId, scope.userHash, scope.userId, [...scope.sharedModelIds], limit],
      ];
      break;
  }
  const { rows } = await db.raw(sql, bindings as never[]);
  return (rows as EventRow[]).map(toEvent);
}

/** The newest event id handed out so far (0 before the first), kept or already pruned. */
export async function newestEventId(db: Db): Promise<bigint> {
  const { rows } = await db.raw(
    `SELECT greatest((SELECT max(id) FROM voice_model_events), (SELECT pruned_through_id FROM voice_model_event_retention), 0)::text AS id`,
  );
  return BigInt(rows[0].id);
}

/** The highest id the retention has deleted (0 while nothing was). */
export async function prunedThroughId(db: Db): Promise<bigint> {
  const { rows } = await db.raw(`SELECT pruned_through_id::text AS id FROM voice_model_event_retention`);
  return BigInt(rows[0]?.id ?? 0);
}

/** Deletes up to `limit` events older than `cutoff`, oldest first; returns how many. */
export async function pruneBefore(trx: Tx, cutoff: Date, limit: number): Promise<number> {
  const { rows } = await trx.raw(
    `WITH gone AS (
       DELETE FROM voice_model_events WHERE id IN (
         SELECT id FROM voice_model_events WHERE at < ? ORDER BY id LIMIT ?)
       RETURNING id)
     UPDATE voice_model_event_retention SET pruned_through_id = greatest(pruned_through_id, (SELECT coalesce(max(id), 0) FROM gone))
     RETURNING (SELECT count(*) FROM gone)::int AS n`,
    [cutoff, limit],
  );
  return Number(rows[0].n);
}

/**
 * Erasure: the user's events keep only their ids, types and times (user id replaced by its hash,
 * model state dropped), and the user disappears from other events' audiences.
 */
export async function forgetUser(trx: Tx, userId: string, userHash: string): Promise<void> {
  await trx.raw(`UPDATE voice_model_events SET user_id = ?, model = NULL WHERE user_id = ?`, [userHash, userId]);
  await trx.raw(`UPDATE voice_model_events SET audience = array_replace(audience, ?::varchar, ?::varchar) WHERE audience @> ARRAY[?]::varchar[]`, [
    userId,
    userHash,
    userId,
  ]);
}
