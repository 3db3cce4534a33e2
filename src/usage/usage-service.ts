import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Knex } from "knex";
import type {
  GetVoiceModelUsageStatsRequest,
  RecordUsageRequest,
} from "../../gen/voicemodel/v1/usage_pb";
import { hasRole, resolveTargetUser } from "../auth/caller";
import type { Caches } from "../cache/caches";
import { scopes, type Codec } from "../cache/cache-tables";
import type { UsageConfig } from "../config";
import { recordAudit } from "../audit/audit-log";
import { inTransaction } from "../db/transaction";
import { accessDenied, AppError, invalidArgument, modelNotFound } from "../errors";
import type { Actor } from "../voice-models/model-events";
import type { SharedAccess } from "../voice-models/access";
import * as modelRepo from "../voice-models/repository";
import { usableModel } from "./usable-model";
import { toUsageEvent, USAGE_LIMITS, type UsageEvent } from "./usage-event";
import * as usageRepo from "./usage-repository";

export interface UsageStats {
  modelId: string;
  usageCount: number;
  totalCost: number;
  averageLatency: number;
  lastUsed: Date | undefined;
  /** Mean rating; undefined when no event was rated. */
  qualityRating: number | undefined;
}

export interface UserAnalytics {
  totalModels: number;
  activeModels: number;
  modelsByProvider: Record<string, number>;
  averageQualityScore: number;
  totalUsageCount: number;
  totalCost: number;
  storageUsedMb: number;
  lastUsed: Date | undefined;
}

const reviveLastUsed = <T extends { lastUsed: Date | undefined }>(json: unknown): T => {
  const value = json as T & { lastUsed?: string };
  return { ...value, lastUsed: value.lastUsed ? new Date(value.lastUsed) : undefined };
};
const statsCodec: Codec<UsageStats> = { encode: (v) => v, decode: reviveLastUsed };
const analyticsCodec: Codec<UserAnalytics> = { encode: (v) => v, decode: reviveLastUsed };

// Cost sums are exact to 6 decimals in the database; round away float noise from the division.
const round6 = (n: number) => Math.round(n * 1e6) / 1e6;

export function statsFromSums(modelId: string, s: usageRepo.UsageSums): UsageStats {
  return {
    modelId,
    usageCount: s.usageCount,
    totalCost: round6(s.costSum),
    averageLatency: s.usageCount > 0 ? s.latencySum / s.usageCount : 0,
    lastUsed: s.lastUsedAt,
    qualityRating: s.ratingCount > 0 ? s.ratingSum / s.ratingCount : undefined,
  };
}

const DAY_MS = 86_400_000;
const SERIES_MAX_DAYS = 366;

export interface SeriesDay {
  day: string;
  usageCount: number;
  totalCost: number;
  averageLatency: number;
}

/** A "YYYY-MM-DD" UTC day as its midnight in ms; INVALID_ARGUMENT naming the field otherwise. */
function parseDay(value: string, field: string): number {
  const ms = /^\d{4}-\d{2}-\d{2}$/.test(value) ? Date.parse(`${value}T00:00:00Z`) : NaN;
  if (!Number.isFinite(ms) || utcDay(ms) !== value) throw invalidArgument(field, `"${value}" is not a day (YYYY-MM-DD)`);
  return ms;
}
const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

/** Usage events, per-model stats and per-user analytics. */
export class UsageService {
  constructor(
    private readonly knex: Knex,
    private readonly caches: Caches,
    private readonly config: Readonly<UsageConfig> & { statsTtlSeconds: number; analyticsTtlSeconds: number },
    private readonly access: SharedAccess,
  ) {}

  async record(actor: Actor, req: RecordUsageRequest): Promise<{ duplicate: boolean }> {
    const { duplicates } = await this.recordAll(actor, [req], () => "");
    return { duplicate: duplicates === 1 };
  }

  async recordBatch(actor: Actor, reqs: RecordUsageRequest[]): Promise<{ recorded: number; duplicates: number }> {
    if (reqs.length === 0 || reqs.length > USAGE_LIMITS.batchMax) {
      throw invalidArgument("events", `must hold 1 to ${USAGE_LIMITS.batchMax} events`);
    }
    return this.recordAll(actor, reqs, (i) => `events[${i}].`);
  }

  /**
   * One transaction for all events: each new (model, key) is stored and added to the totals and
   * roll-ups; a known key with the same payload is a duplicate; with another payload the whole
   * call fails. Caches holding the models' stats and their owners' analytics are invalidated.
   */
  private async recordAll(actor: Actor, reqs: RecordUsageRequest[], prefix: (i: number) => string) {
    if (!hasRole(actor.caller, "service")) throw accessDenied("only the service role may record usage");
    const now = new Date();
    const events = reqs.map((r, i) => toUsageEvent(r, now, prefix(i)));
    const prefixOf = new Map<UsageEvent, string>(events.map((e, i) => [e, prefix(i)]));
    const reused = (e: UsageEvent) =>
      new AppError("IDEMPOTENCY_KEY_REUSED", `idempotency key "${e.idempotencyKey}" of model ${e.modelId} was recorded with another payload`, {
        field: `${prefixOf.get(e)}idempotencyKey`,
        modelId: e.modelId,
      });

    // The same key twice in one batch: same payload counts once, another payload is refused.
    const unique = new Map<string, UsageEvent>();
    let duplicates = 0;
    for (const e of events) {
      const first = unique.get(usageRepo.eventKey(e));
      if (!first) unique.set(usageRepo.eventKey(e), e);
      else if (first.payloadHash !== e.payloadHash) throw reused(e);
      else duplicates++;
    }
    // Key order, so concurrent batches wait on each other's keys in one order (no deadlocks).
    const candidates = [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, e]) => e);

    return inTransaction(this.knex, async (trx) => {
      const modelIds = [...new Set(candidates.map((e) => e.modelId))];
      const found = await modelRepo.findModels(trx, modelIds);
      const owners = new Map(found.filter((m) => !m.deletedAt).map((m) => [m.id, m.userId]));
      for (const id of modelIds) if (!owners.has(id)) throw modelNotFound(id);
      // The user who synthesized must be able to use the model (owner, or shared for "use").
      const checked = new Set<string>();
      for (const e of candidates) {
        const pair = `${e.modelId} ${e.userId}`;
        if (checked.has(pair)) continue;
        checked.add(pair);
        if (!(await this.access.userCanUse(trx, e.userId, { id: e.modelId, userId: owners.get(e.modelId)! }))) {
          throw accessDenied(`user ${e.userId} may not use voice model ${e.modelId}`, { field: `${prefixOf.get(e)}userId`, modelId: e.modelId });
        }
      }

      const inserted = await usageRepo.insertNewEvents(trx, candidates);
      const known = candidates.filter((e) => !inserted.has(usageRepo.eventKey(e)));
      let batchDuplicates = duplicates;
      if (known.length > 0) {
        const stored = await usageRepo.storedPayloadHashes(trx, known);
        for (const e of known) {
          if (stored.get(usageRepo.eventKey(e)) !== e.payloadHash) throw reused(e);
          batchDuplicates++;
        }
      }
      const fresh = candidates.filter((e) => inserted.has(usageRepo.eventKey(e)));
      if (fresh.length > 0) {
        await usageRepo.addToRollups(trx, fresh);
        const touched = [...new Set(fresh.map((e) => e.modelId))];
        await this.caches.onUsage(
          trx,
          touched.map((id) => ({ id, userId: owners.get(id)! })),
        );
      }
      // One audit event per call, however many records, committed with the usage itself.
      const only = (values: string[]) => (new Set(values).size === 1 ? values[0] : undefined);
      await recordAudit(trx, {
        actorId: actor.caller.userId,
        actorRoles: actor.caller.roles,
        requestId: actor.requestId,
        clientAddress: actor.clientAddress,
        action: "usage.recorded",
        targetUserId: only(events.map((e) => e.userId)),
        modelId: only(events.map((e) => e.modelId)),
        details: { records: events.length, duplicates: batchDuplicates },
      });
      return { recorded: fresh.length, duplicates: batchDuplicates };
      // The TTS write path writes no model, file or backup row: it skips the erasure key's round trip.
    }, { settings: false, deadlineMs: actor.deadlineMs });
  }

  /** Stats of a model the caller can read, lifetime (usage_totals) or by UTC days (usage_daily). */
  async stats(actor: Actor, req: GetVoiceModelUsageStatsRequest): Promise<UsageStats> {
    const range = dayRange(req);
    const model = await usableModel(this.knex, this.caches.modelReads, this.access, actor, req.modelId);
    const key = range ? `voice_stats:${model.id}:${range.from}:${range.to}` : `voice_stats:${model.id}`;
    const load = async () => {
      const sums = range
        ? await usageRepo.rangeSums(this.knex, model.id, range.from, range.to)
        : ((await usageRepo.lifetimeSums(this.knex, [model.id])).get(model.id) ?? usageRepo.EMPTY_SUMS);
      return statsFromSums(model.id, sums);
    };
    const entry = { table: "cache_voice_stats" as const, key, scope: scopes.model(model.id), userId: model.userId, modelId: model.id, ttlSeconds: this.config.statsTtlSeconds };
    return (await this.caches.tables.getOrLoad(entry, load, statsCodec))!;
  }

  /** A user's analytics over their live models (deleted ones and their usage excluded). */
  async analytics(actor: Actor, requestedUserId: string | undefined): Promise<UserAnalytics> {
    const userId = resolveTargetUser(actor.caller, requestedUserId);
    const load = async (): Promise<UserAnalytics> => {
      const a = await usageRepo.userAnalytics(this.knex, userId);
      return {
        totalModels: a.totalModels,
        activeModels: a.activeModels,
        modelsByProvider: a.byProvider,
        averageQualityScore: a.averageQualityScore,
        totalUsageCount: a.usage.usageCount,
        totalCost: round6(a.usage.costSum),
        storageUsedMb: a.storedBytes / 1_000_000,
        lastUsed: a.usage.lastUsedAt,
      };
    };
    const entry = { table: "cache_voice_analytics" as const, key: `voice_analytics:${userId}`, scope: scopes.user(userId), userId, ttlSeconds: this.config.analyticsTtlSeconds };
    return (await this.caches.tables.getOrLoad(entry, load, analyticsCodec))!;
  }

  /** Daily usage of a model the caller can read, every day of the range (at most 366), zeros filled in. */
  async series(actor: Actor, req: { modelId: string; startDay?: string; endDay?: string }): Promise<{ modelId: string; days: SeriesDay[] }> {
    const end = req.endDay === undefined ? Math.floor(Date.now() / DAY_MS) * DAY_MS : parseDay(req.endDay, "endDay");
    const start = req.startDay === undefined ? end - 29 * DAY_MS : parseDay(req.startDay, "startDay");
    if (start > end) throw invalidArgument("startDay", "must not be after endDay");
    if ((end - start) / DAY_MS + 1 > SERIES_MAX_DAYS) throw invalidArgument("startDay", `the range holds at most ${SERIES_MAX_DAYS} days`);
    const model = await usableModel(this.knex, this.caches.modelReads, this.access, actor, req.modelId);
    const rows = new Map((await usageRepo.dailyRows(this.knex, model.id, utcDay(start), utcDay(end + DAY_MS))).map((r) => [r.day, r]));
    const days: SeriesDay[] = [];
    for (let t = start; t <= end; t += DAY_MS) {
      const row = rows.get(utcDay(t));
      days.push({
        day: utcDay(t),
        usageCount: row?.usageCount ?? 0,
        totalCost: round6(row?.costSum ?? 0),
        averageLatency: row && row.usageCount > 0 ? row.latencySum / row.usageCount : 0,
      });
    }
    return { modelId: model.id, days };
  }

  /** Fleet-wide figures, for admins only. */
  async fleet(actor: Actor): Promise<usageRepo.FleetFigures> {
    if (!hasRole(actor.caller, "admin")) throw accessDenied("GetFleetAnalytics needs the admin role");
    const f = await usageRepo.fleetFigures(this.knex);
    return { ...f, costSum: round6(f.costSum) };
  }

  /** Deletes raw events older than the retention period (their keys may then be reused). */
  async purgeExpired(batchSize = 5000): Promise<number> {
    const before = new Date(Date.now() - this.config.retentionDays * DAY_MS);
    return usageRepo.purgeEventsBefore(this.knex, before, batchSize);
  }
}

/** The UTC days [from, to) overlapping [startTime, endTime); undefined for the lifetime. */
function dayRange(req: GetVoiceModelUsageStatsRequest): { from: string; to: string } | undefined {
  if (!req.startTime && !req.endTime) return undefined;
  const start = req.startTime ? timestampDate(req.startTime).getTime() : 0;
  const end = req.endTime ? timestampDate(req.endTime).getTime() : Date.now();
  if (!Number.isFinite(start) || !Number.isFinite(end)) throw invalidArgument("startTime", "is not a valid time");
  if (end <= start) throw invalidArgument("endTime", "must be after startTime");
  const from = Math.floor(start / DAY_MS) * DAY_MS;
  const to = Math.ceil(end / DAY_MS) * DAY_MS;
  return { from: utcDay(from), to: utcDay(to) };
}
