import type { Db, Tx } from "../db/transaction";
import * as modelRepo from "../voice-models/repository";
import type { UsageEvent } from "./usage-event";

/** Storage of usage: raw events, lifetime totals and daily roll-ups. Reads never touch raw events. */

export interface UsageSums {
  usageCount: number;
  costSum: number;
  latencySum: number;
  ratingSum: number;
  ratingCount: number;
  lastUsedAt: Date | undefined;
}

export const EMPTY_SUMS: UsageSums = Object.freeze({
  usageCount: 0,
  costSum: 0,
  latencySum: 0,
  ratingSum: 0,
  ratingCount: 0,
  lastUsedAt: undefined,
});

const KEY_SEPARATOR = "\u0000";
export const eventKey = (e: Pick<UsageEvent, "modelId" | "idempotencyKey">) => `${e.modelId}${KEY_SEPARATOR}${e.idempotencyKey}`;

/**
 * Inserts the events whose (model, key) is new; returns the keys (eventKey) that were inserted.
 * A key already stored is left alone: the caller compares its payload.
 */
export async function insertNewEvents(trx: Tx, events: UsageEvent[]): Promise<Set<string>> {
  if (events.length === 0) return new Set();
  const rows = events.map((e) => ({
    model_id: e.modelId,
    user_id: e.userId,
    idempotency_key: e.idempotencyKey,
    payload_hash: e.payloadHash,
    characters: e.characters,
    audio_seconds: e.audioSeconds,
    latency_ms: e.latencyMs,
    cost: (e.costMicros / 1_000_000).toFixed(6),
    quality_rating: e.qualityRating,
    used_at: e.usedAt,
  }));
  const inserted = (await trx("usage_events")
    .insert(rows)
    .onConflict(["model_id", "idempotency_key"])
    .ignore()
    .returning(["model_id", "idempotency_key"])) as { model_id: string; idempotency_key: string }[];
  return new Set(inserted.map((r) => eventKey({ modelId: r.model_id, idempotencyKey: r.idempotency_key })));
}

/** The stored payload hashes of some (model, key) pairs. */
export async function storedPayloadHashes(trx: Tx, events: UsageEvent[]): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  if (events.length === 0) return found;
  // A VALUES join rather than a row-value IN list: PGlite fails on long IN lists of row values.
  const rows = (
    (await trx.raw(
      `SELECT e.model_id, e.idempotency_key, e.payload_hash FROM usage_events e
       JOIN (VALUES ${events.map(() => "(?::uuid, ?)").join(", ")}) AS k(model_id, idempotency_key)
         ON e.model_id = k.model_id AND e.idempotency_key = k.idempotency_key`,
      events.flatMap((e) => [e.modelId, e.idempotencyKey]),
    )) as { rows: { model_id: string; idempotency_key: string; payload_hash: string }[] }
  ).rows;
  for (const r of rows) found.set(eventKey({ modelId: r.model_id, idempotencyKey: r.idempotency_key }), r.payload_hash);
  return found;
}

interface Delta {
  usageCount: number;
  costMicros: number;
  latencySum: number;
  charactersSum: number;
  audioMillis: number;
  ratingSum: number;
  ratingCount: number;
  lastUsedAt: Date;
}

function accumulate(into: Map<string, Delta>, key: string, e: UsageEvent) {
  const d = into.get(key) ?? {
    usageCount: 0,
    costMicros: 0,
    latencySum: 0,
    charactersSum: 0,
    audioMillis: 0,
    ratingSum: 0,
    ratingCount: 0,
    lastUsedAt: e.usedAt,
  };
  d.usageCount += 1;
  d.costMicros += e.costMicros;
  d.latencySum += e.latencyMs;
  d.charactersSum += e.characters ?? 0;
  d.audioMillis += Math.round((e.audioSeconds ?? 0) * 1000);
  if (e.qualityRating !== null) {
    d.ratingSum += e.qualityRating;
    d.ratingCount += 1;
  }
  if (e.usedAt > d.lastUsedAt) d.lastUsedAt = e.usedAt;
  into.set(key, d);
}

const SUM_COLUMNS = ["usage_count", "cost_sum", "latency_sum", "characters_sum", "audio_seconds_sum", "rating_sum", "rating_count"];

function deltaRow(d: Delta) {
  return {
    usage_count: d.usageCount,
    cost_sum: (d.costMicros / 1_000_000).toFixed(6),
    latency_sum: d.latencySum,
    characters_sum: d.charactersSum,
    audio_seconds_sum: (d.audioMillis / 1000).toFixed(3),
    rating_sum: d.ratingSum,
    rating_count: d.ratingCount,
    last_used_at: d.lastUsedAt,
  };
}

async function upsertSums(trx: Tx, table: string, conflict: string[], rows: Record<string, unknown>[]) {
  if (rows.length === 0) return;
  const merge = Object.fromEntries([
    ...SUM_COLUMNS.map((c) => [c, trx.raw(`?? + excluded.??`, [`${table}.${c}`, c])]),
    ["last_used_at", trx.raw(`greatest(??, excluded.last_used_at)`, [`${table}.last_used_at`])],
  ]);
  await trx(table).insert(rows).onConflict(conflict).merge(merge);
}

/**
 * Adds newly recorded events to the lifetime totals and daily roll-ups, in the events'
 * transaction. Rows are touched in key order so concurrent batches cannot deadlock.
 */
export async function addToRollups(trx: Tx, events: UsageEvent[]): Promise<void> {
  const totals = new Map<string, Delta>();
  const daily = new Map<string, Delta>();
  for (const e of events) {
    accumulate(totals, e.modelId, e);
    accumulate(daily, `${e.modelId}|${e.day}`, e);
  }
  const totalRows = [...totals.keys()].sort().map((modelId) => ({ model_id: modelId, ...deltaRow(totals.get(modelId)!) }));
  const dailyRows = [...daily.keys()].sort().map((key) => {
    const [modelId, day] = key.split("|");
    return { model_id: modelId, day, ...deltaRow(daily.get(key)!) };
  });
  await upsertSums(trx, "usage_totals", ["model_id"], totalRows);
  await upsertSums(trx, "usage_daily", ["model_id", "day"], dailyRows);
}

interface SumsRow {
  usage_count: number | null;
  cost_sum: number | null;
  latency_sum: number | null;
  rating_sum: number | null;
  rating_count: number | null;
  last_used_at: Date | null;
}

function toSums(row: SumsRow | undefined): UsageSums {
  if (!row) return EMPTY_SUMS;
  return {
    usageCount: Number(row.usage_count ?? 0),
    costSum: Number(row.cost_sum ?? 0),
    latencySum: Number(row.latency_sum ?? 0),
    ratingSum: Number(row.rating_sum ?? 0),
    ratingCount: Number(row.rating_count ?? 0),
    lastUsedAt: row.last_used_at ?? undefined,
  };
}

/** Lifetime totals of some models (models never used are absent from the map). */
export async function lifetimeSums(db: Db, modelIds: string[]): Promise<Map<string, UsageSums>> {
  const result = new Map<string, UsageSums>();
  if (modelIds.length === 0) return result;
  const rows = (await db("usage_totals").whereIn("model_id", modelIds)) as (SumsRow & { model_id: string })[];
  for (const row of rows) result.set(row.model_id, toSums(row));
  return result;
}

/** Sums of one model over the UTC days [fromDay, toDay) from the daily roll-ups. */
export function rangeSumsQuery(db: Db, modelId: string, fromDay: string, toDay: string) {
  return db("usage_daily")
    .where("model_id", modelId)
    .where("day", ">=", fromDay)
    .where("day", "<", toDay)
    .select(
      db.raw("sum(usage_count) as usage_count"),
      db.raw("sum(cost_sum) as cost_sum"),
      db.raw("sum(latency_sum) as latency_sum"),
      db.raw("sum(rating_sum) as rating_sum"),
      db.raw("sum(rating_count) as rating_count"),
      db.raw("max(last_used_at) as last_used_at"),
    );
}

export async function rangeSums(db: Db, modelId: string, fromDay: string, toDay: string): Promise<UsageSums> {
  const [row] = (await rangeSumsQuery(db, modelId, fromDay, toDay)) as SumsRow[];
  return toSums(row);
}

export interface UserAnalyticsRow {
  totalModels: number;
  activeModels: number;
  averageQualityScore: number;
  usage: UsageSums;
  storedBytes: number;
  byProvider: Record<string, number>;
}

/** The lifetime totals of the user's live models summed (never the raw events). */
export function analyticsQuery(db: Db, userId: string) {
  return db("usage_totals as t")
    .whereIn("t.model_id", modelRepo.liveModelIds(db, userId))
    .select(
      db.raw("sum(t.usage_count) as usage_count"),
      db.raw("sum(t.cost_sum) as cost_sum"),
      db.raw("sum(t.latency_sum) as latency_sum"),
      db.raw("sum(t.rating_sum) as rating_sum"),
      db.raw("sum(t.rating_count) as rating_count"),
      db.raw("max(t.last_used_at) as last_used_at"),
    );
}

export async function userAnalytics(db: Db, userId: string): Promise<UserAnalyticsRow> {
  const [[row], figures] = await Promise.all([analyticsQuery(db, userId) as unknown as Promise<SumsRow[]>, modelRepo.userModelFigures(db, userId)]);
  return { ...figures, usage: toSums(row) };
}

/** Deletes raw events recorded before `before`, in batches; returns how many went. */
export async function purgeEventsBefore(db: Db, before: Date, batchSize: number): Promise<number> {
  let purged = 0;
  for (;;) {
    // Counted from RETURNING: the affected-row count is not reported alike by pg and PGlite.
    const { rows } = (await db.raw(
      `DELETE FROM usage_events WHERE id IN
         (SELECT id FROM usage_events WHERE recorded_at < ? LIMIT ?) RETURNING 1`,
      [before.toISOString(), batchSize],
    )) as { rows: unknown[] };
    purged += rows.length;
    if (rows.length < batchSize) return purged;
  }
}

export interface DayRow {
  day: string;
  usageCount: number;
  costSum: number;
  latencySum: number;
}

/** The daily roll-ups of one model over the UTC days [fromDay, toDay), oldest first; days without use absent. */
export async function dailyRows(db: Db, modelId: string, fromDay: string, toDay: string): Promise<DayRow[]> {
  const rows = (await db("usage_daily")
    .where("model_id", modelId)
    .where("day", ">=", fromDay)
    .where("day", "<", toDay)
    .orderBy("day")
    .select(db.raw("to_char(day, 'YYYY-MM-DD') as day"), "usage_count", "cost_sum", "latency_sum")) as Array<{ day: string; usage_count: number; cost_sum: number; latency_sum: number }>;
  return rows.map((r) => ({ day: r.day, usageCount: Number(r.usage_count), costSum: Number(r.cost_sum), latencySum: Number(r.latency_sum) }));
}

export interface FleetFigures {
  totalUsers: number;
  totalModels: number;
  activeModels: number;
  deletedModels: number;
  byProvider: Record<string, number>;
  byStatus: Record<string, number>;
  averageQualityScore: number;
  usageCount: number;
  costSum: number;
  storedBytes: number;
}

/** Fleet-wide figures: a few aggregate queries over models, lifetime totals and files. */
export async function fleetFigures(db: Db): Promise<FleetFigures> {
  const [models, byProvider, byStatus, usage, files] = await Promise.all([
    db("voice_models").first(
      db.raw("count(distinct user_id) filter (where deleted_at is null) as users"),
      db.raw("count(*) filter (where deleted_at is null) as live"),
      db.raw("count(*) filter (where deleted_at is null and is_active) as active"),
      db.raw("count(*) filter (where deleted_at is not null) as deleted"),
      db.raw("coalesce(avg(quality_score) filter (where deleted_at is null), 0) as quality"),
    ),
    db("voice_models").whereNull("deleted_at").groupBy("provider").select("provider as key", db.raw("count(*) as n")),
    db("voice_models").whereNull("deleted_at").groupBy("status").select("status as key", db.raw("count(*) as n")),
    db("usage_totals").first(db.raw("coalesce(sum(usage_count), 0) as usage_count"), db.raw("coalesce(sum(cost_sum), 0) as cost_sum")),
    db("model_files").first(db.raw("coalesce(sum(size_bytes), 0) as bytes")),
  ]);
  const counts = (rows: Array<{ key: string; n: number | string }>) => Object.fromEntries(rows.map((r) => [r.key, Number(r.n)]));
  return {
    totalUsers: Number(models.users),
    totalModels: Number(models.live),
    activeModels: Number(models.active),
    deletedModels: Number(models.deleted),
    byProvider: counts(byProvider as never),
    byStatus: counts(byStatus as never),
    averageQualityScore: Number(models.quality),
    usageCount: Number(usage.usage_count),
    costSum: Number(usage.cost_sum),
    storedBytes: Number(files.bytes),
  };
}
