import type { Knex } from "knex";
import type { Caller } from "../auth/caller";
import type { Db, Tx } from "../db/transaction";
import { accessDenied, invalidArgument } from "../errors";
import { TIME_MS, TIME_RANGE_MS, type PageTokens, type PositionField } from "../paging/page-token";
import { isUserId, USER_ID_RULE } from "../auth/user-id";
import * as valid from "../voice-models/validation";
import type { Actor, ModelChange, ModelChangeKind, ModelChangeListener } from "../voice-models/model-events";

/** One audit event to write. Ids are plain columns so erasing a user can hash them in place. */
export interface AuditEventInput {
  action: string;
  actorId?: string;
  actorRoles?: readonly string[];
  targetUserId?: string;
  modelId?: string;
  /** "OK" or an error code. */
  resultCode?: string;
  requestId?: string;
  clientAddress?: string;
  /**
   * Other users the event is about (a share's targets, the user a refusal names). Every user id
   * of the event is kept out of details' text: stored here, referred to as "{user:N}".
   */
  userIds?: readonly string[];
  details?: Record<string, unknown>;
  /** What to store for a user id of the event (an erased user's hash in place of the id). */
  storedId?: (userId: string) => string;
}

export interface AuditEvent {
  id: string;
  at: Date;
  actorId: string | undefined;
  actorRoles: string[];
  action: string;
  targetUserId: string | undefined;
  modelId: string | undefined;
  resultCode: string;
  requestId: string | undefined;
  clientAddress: string | undefined;
  count: number;
  details: Record<string, unknown>;
}

interface AuditRow {
  id: number | string;
  at: Date;
  actor_id: string | null;
  actor_roles: string;
  action: string;
  target_user_id: string | null;
  model_id: string | null;
  result_code: string;
  request_id: string | null;
  client_address: string | null;
  count: number;
  user_ids: string[] | null;
  details: Record<string, unknown>;
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const PLACEHOLDER = /\{user:(\d+)\}/g;

/**
 * A whole user id inside text: not part of a longer run of id characters, except that a '.' or
 * ':' right after it may end a sentence or a clause ("for user bob: 5 per 3600 s"). A short id
 * inside a model id or a method name is left alone. The same rule as the SQL of eraseUserFromAudit.
 */
const ID_CHAR = "[A-Za-z0-9._:@|-]";
const wholeIds = (alternatives: string) => `(?<!${ID_CHAR})(?:${alternatives})(?![A-Za-z0-9_@|-])(?![.:]${ID_CHAR})`;

/** details with every whole occurrence of ids[i] in its strings replaced by "{user:i}". */
export function withoutUserIds(value: unknown, ids: readonly string[]): unknown {
  if (ids.length === 0) return value;
  // Longest first, so an id that contains another is replaced whole.
  const order = [...ids.keys()].sort((a, b) => ids[b].length - ids[a].length);
  const pattern = new RegExp(wholeIds(order.map((i) => escapeRegExp(ids[i])).join("|")), "g");
  const index = new Map(ids.map((id, i) => [id, i]));
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return v.replace(pattern, (id) => `{user:${index.get(id)}}`);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value);
}

/** The inverse when read: placeholders filled from the row's ids (hashes, once a user was erased). */
function withUserIds(value: unknown, ids: readonly string[]): unknown {
  if (ids.length === 0) return value;
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return v.includes("{user:") ? v.replace(PLACEHOLDER, (text, i) => ids[Number(i)] ?? text) : v;
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  return walk(value);
}

const toEvent = (row: AuditRow): AuditEvent => ({
  id: String(row.id),
  at: row.at,
  actorId: row.actor_id ?? undefined,
  actorRoles: row.actor_roles ? row.actor_roles.split(",") : [],
  action: row.action,
  targetUserId: row.target_user_id ?? undefined,
  modelId: row.model_id ?? undefined,
  resultCode: row.result_code,
  requestId: row.request_id ?? undefined,
  clientAddress: row.client_address ?? undefined,
  count: row.count,
  details: (withUserIds(row.details ?? {}, row.user_ids ?? []) ?? {}) as Record<string, unknown>,
});

/** The actor fields of an event from the verified caller of a call. */
export const byActor = (actor: Actor): Pick<AuditEventInput, "actorId" | "actorRoles" | "requestId" | "clientAddress"> => ({
  actorId: actor.caller.userId,
  actorRoles: actor.caller.roles,
  requestId: actor.requestId,
  clientAddress: actor.clientAddress,
});

/** Writes one event on db: pass the transaction of the change so both commit together. */
export async function recordAudit(db: Db, event: AuditEventInput): Promise<void> {
  const userIds = [...new Set([event.actorId, event.targetUserId, ...(event.userIds ?? [])].filter((id): id is string => !!id))];
  const stored = (id: string | undefined) => (id === undefined || !event.storedId ? id : event.storedId(id));
  await db("audit_events").insert({
    action: event.action,
    actor_id: stored(event.actorId) ?? null,
    actor_roles: (event.actorRoles ?? []).join(","),
    target_user_id: stored(event.targetUserId) ?? null,
    model_id: event.modelId ?? null,
    result_code: event.resultCode ?? "OK",
    request_id: event.requestId ?? null,
    client_address: event.clientAddress ?? null,
    user_ids: userIds.map((id) => stored(id)!),
    details: JSON.stringify(withoutUserIds(event.details ?? {}, userIds)),
  });
}

/**
 * An unauthenticated refusal: one event per client address per minute, counting the calls, so a
 * flood of bad tokens costs one row a minute instead of one per call.
 */
export async function recordUnauthenticated(
  db: Db,
  refusal: { clientAddress: string; requestId: string; method: string; reason: string },
): Promise<void> {
  await db.raw(
    `INSERT INTO audit_events (at, action, result_code, request_id, client_address, details, aggregate_key)
     VALUES (date_trunc('minute', now()), 'auth.refused', 'UNAUTHENTICATED', ?, ?, ?::jsonb,
             'auth.refused|' || ? || '|' || to_char(date_trunc('minute', now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI'))
     ON CONFLICT (aggregate_key) DO UPDATE SET count = audit_events.count + 1`,
    [refusal.requestId, refusal.clientAddress, JSON.stringify({ method: refusal.method, reason: refusal.reason }), refusal.clientAddress],
  );
}

// Which change of a transaction names the call: a create that also deactivated the previous
// model is "model.created", a delete that activated the next best is "model.deleted".
const PRIORITY: ModelChangeKind[] = ["created", "deleted", "purged", "updated", "activated", "deactivated"];

function primaryChange(changes: readonly ModelChange[]): ModelChange {
  for (const kind of PRIORITY) {
    const found = changes.find((c) => c.kind === kind);
    if (found) return found;
  }
  return changes[0];
}

/** Model writes: one event per writing call, in the call's transaction. */
export const auditModelChanges: ModelChangeListener = async (trx, changes, actor) => {
  const primary = primaryChange(changes);
  await recordAudit(trx, {
    ...byActor(actor),
    action: `model.${primary.kind}`,
    targetUserId: primary.model.userId,
    modelId: primary.model.id,
    // A cleanup batch deletes thousands at once: the event keeps the first 100 and the count.
    details: { changes: changes.slice(0, 100).map((c) => ({ kind: c.kind, modelId: c.model.id })), changeCount: changes.length },
  });
};

export interface AuditFilters {
  /** Events whose actor or target is this user. */
  userId?: string;
  modelId?: string;
  action?: string;
  since?: Date;
  until?: Date;
}

export interface AuditPage {
  events: AuditEvent[];
  nextPageToken: string;
}

/** Position after an event in the list order (at, id; both descending). */
interface AuditCursor {
  atMs: number;
  id: string;
}

const CURSOR: readonly PositionField[] = [TIME_MS, { kind: "serial" }];

/** Events newest first, keyset-paged on (at, id). */
export async function listAuditEvents(db: Knex, filters: AuditFilters, limit: number, after?: AuditCursor): Promise<AuditEvent[]> {
  const query = db<AuditRow>("audit_events").select("*");
  if (filters.userId !== undefined) {
    const userId = filters.userId;
    query.where((q) => q.where("actor_id", userId).orWhere("target_user_id", userId));
  }
  if (filters.modelId !== undefined) query.where("model_id", filters.modelId);
  if (filters.action !== undefined) query.where("action", filters.action);
  if (filters.since !== undefined) query.where("at", ">=", filters.since);
  if (filters.until !== undefined) query.where("at", "<", filters.until);
  if (after) query.whereRaw("(at, id) < (?::timestamptz, ?::bigint)", [new Date(after.atMs).toISOString(), after.id]);
  const rows = await query.orderBy([
    { column: "at", order: "desc" },
    { column: "id", order: "desc" },
  ]).limit(limit);
  return (rows as AuditRow[]).map(toEvent);
}

/** Deletes events older than the retention, a bounded batch per statement; returns how many. */
export async function purgeAuditEvents(db: Knex, retentionDays: number, batch = 10_000): Promise<number> {
  let total = 0;
  for (;;) {
    const result = await db.raw(
      `DELETE FROM audit_events WHERE id IN (
         SELECT id FROM audit_events WHERE at < now() - make_interval(days => ?) LIMIT ?)`,
      [retentionDays, batch],
    );
    const deleted = Number(result.rowCount ?? result.affectedRows ?? 0);
    total += deleted;
    if (deleted < batch) return total;
  }
}

/** Whose events a caller may list: admins anyone's (or all); everyone else only their own. */
export function auditScope(caller: Caller, requestedUserId: string | undefined): string | undefined {
  if (requestedUserId && !isUserId(requestedUserId)) {
    throw invalidArgument("userId", `must be ${USER_ID_RULE}`);
  }
  if (caller.roles.includes("admin")) return requestedUserId || undefined;
  if (requestedUserId && requestedUserId !== caller.userId) {
    throw accessDenied(`caller may not read the audit events of user ${requestedUserId}`, { field: "userId", userId: requestedUserId });
  }
  return caller.userId;
}

const LIMIT_DEFAULT = 50;
const LIMIT_MAX = 500;

/** ListAuditEvents: who may see what, validated filters, one page. */
export async function queryAuditEvents(
  db: Knex,
  pageTokens: PageTokens,
  caller: Caller,
  req: { userId?: string; modelId?: string; action?: string; since?: Date; until?: Date; limit?: number; pageToken?: string },
): Promise<AuditPage> {
  const userId = auditScope(caller, req.userId);
  const limit = req.limit === undefined || req.limit === 0 ? LIMIT_DEFAULT : req.limit;
  if (!Number.isInteger(limit) || limit < 0 || limit > LIMIT_MAX) throw invalidArgument("limit", `must be 0 to ${LIMIT_MAX}`);
  const filters: AuditFilters = {
    userId,
    modelId: req.modelId === undefined ? undefined : valid.modelId(req.modelId),
    action: req.action || undefined,
    since: req.since === undefined ? undefined : time(req.since, "since"),
    until: req.until === undefined ? undefined : time(req.until, "until"),
  };
  // A token opens only for the caller and filters it was minted for.
  const scope = { callerId: caller.userId, filters };
  let after: AuditCursor | undefined;
  if (req.pageToken) {
    const [atMs, id] = pageTokens.open("ListAuditEvents", scope, CURSOR, req.pageToken);
    after = { atMs: atMs as number, id: id as string };
  }
  const events = await listAuditEvents(db, filters, limit, after);
  const last = events[events.length - 1];
  return { events, nextPageToken: events.length === limit && last ? pageTokens.mint("ListAuditEvents", scope, CURSOR, [last.at.getTime(), last.id]) : "" };
}

/** A time PostgreSQL takes (years 1 to 9999). */
function time(value: Date, field: string): Date {
  const ms = value.getTime();
  if (!(ms >= TIME_RANGE_MS.min && ms <= TIME_RANGE_MS.max)) throw invalidArgument(field, "must be a time from year 1 to 9999");
  return value;
}

/**
 * Erasure's pass over the audit log, in its transaction: the id becomes hash in both id columns
 * and in user_ids (which details' "{user:N}" refer to), and in the text of rows written before
 * user ids were kept apart (user_ids NULL), as a whole id only.
 */
export async function eraseUserFromAudit(trx: Tx, userId: string, hash: string): Promise<void> {
  await trx("audit_events").where("actor_id", userId).update({ actor_id: hash });
  await trx("audit_events").where("target_user_id", userId).update({ target_user_id: hash });
  await trx.raw(`UPDATE audit_events SET user_ids = array_replace(user_ids, ?::varchar, ?::varchar) WHERE user_ids @> ARRAY[?]::varchar[]`, [
    userId,
    hash,
    userId,
  ]);
  // The whole id only (see wholeIds); PostgreSQL's regular expressions read the same syntax.
  const pattern = wholeIds(userId.replace(/[^A-Za-z0-9]/g, "\\$&"));
  await trx.raw(`UPDATE audit_events SET details = regexp_replace(details::text, ?, ?, 'g')::jsonb WHERE user_ids IS NULL AND strpos(details::text, ?) > 0`, [
    pattern,
    hash,
    userId,
  ]);
}

/** A run of user-id characters in text, and the same without a trailing '.' or ':'. */
const ID_RUN = /[A-Za-z0-9._:@|-]+/g;

/**
 * Rows written before user ids were kept apart may name users erased back then, whose ids are
 * gone: every id-like word of their details whose SHA-256 is one of `hashes` (old hash -> keyed
 * hash) is replaced by the keyed hash. Batched by id; returns how many rows changed.
 */
export async function rehashLegacyDetails(trx: Tx, hashes: ReadonlyMap<string, string>, sha256Hex: (text: string) => string): Promise<number> {
  if (hashes.size === 0) return 0;
  const replaceIn = (text: string) =>
    text.replace(ID_RUN, (run) => {
      for (const candidate of [run, run.replace(/[.:]+$/, "")]) {
        const keyed = candidate && hashes.get(sha256Hex(candidate));
        if (keyed) return keyed + run.slice(candidate.length);
      }
      return run;
    });
  const walk = (v: unknown): unknown => {
    if (typeof v === "string") return replaceIn(v);
    if (Array.isArray(v)) return v.map(walk);
    if (v !== null && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, walk(x)]));
    return v;
  };
  let changed = 0;
  let after = 0;
  for (;;) {
    const rows = (await trx("audit_events").whereNull("user_ids").where("id", ">", after).orderBy("id").limit(1000).select("id", "details")) as Array<{
      id: number | string;
      details: Record<string, unknown>;
    }>;
    if (rows.length === 0) return changed;
    for (const row of rows) {
      const before = JSON.stringify(row.details);
      const rewritten = JSON.stringify(walk(row.details));
      if (rewritten !== before) {
        await trx("audit_events").where({ id: row.id }).update({ details: rewritten });
        changed++;
      }
    }
    after = Number(rows[rows.length - 1].id);
  }
}
