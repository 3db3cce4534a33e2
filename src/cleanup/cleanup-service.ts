import type { Knex } from "knex";
import { byActor, recordAudit } from "../audit/audit-log";
import { resolveTargetUser } from "../auth/caller";
import { inTransaction } from "../db/transaction";
import { accessDenied, invalidArgument } from "../errors";
import type { ServiceMetrics } from "../metrics/service-metrics";
import type { VoiceModelRow } from "../db/models/voice-model-row";
import type { Tx } from "../db/transaction";
import { makeCaller } from "../auth/caller";
import type { Actor, ModelChange } from "../voice-models/model-events";
import * as models from "../voice-models/repository";
import { toRecord, type VoiceModelRecord } from "../voice-models/voice-model";
import { eligibleCondition, reasonsFor, type CleanupRules } from "./eligibility";

export const DRY_RUN_LIST_MAX = 1000;
const MAX_BATCH = 10_000;

export interface ExpiringModel {
  model: VoiceModelRecord;
  eligibleAt: Date;
  reasons: string[];
}

export interface CleanupResult {
  eligible: number;
  cleaned: number;
  batches: number;
  /** Dry run only. */
  models: ExpiringModel[];
}

/** Hands a batch's deletions to the model-change listeners (caches, files, shares, audit). */
export type NotifyChanges = (trx: Tx, changes: readonly ModelChange[], actor: Actor) => Promise<void>;

/** Who the scheduled run acts as, in audit events and for the listeners. */
export const CLEANUP_ACTOR_ID = "system:cleanup";

export interface RunOptions {
  dryRun: boolean;
  batchSize?: number;
  trigger: "manual" | "scheduled";
  /** Who runs it: the instance id (for cleanup_runs). */
  holder: string;
  /** Called after every committed batch; throwing stops the run (e.g. the lease was lost). */
  afterBatch?: () => Promise<void>;
  /** Who asked (the admin of a manual run); the scheduled run acts as system:cleanup. */
  actor?: Actor;
}

/**
 * The cleanup of old, unused, low-quality models. `clock` is injectable so tests can place the
 * boundaries exactly.
 */
export class CleanupService {
  constructor(
    private readonly knex: Knex,
    private readonly rules: CleanupRules,
    private readonly metrics: ServiceMetrics | undefined,
    private readonly notify: NotifyChanges = async () => undefined,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  /** How many models are eligible now. */
  async countEligible(now = this.clock()): Promise<number> {
    const cond = eligibleCondition(this.rules, now);
    const { rows } = await this.knex.raw(`SELECT count(*)::int AS n FROM voice_models v WHERE ${cond.sql}`, cond.bindings);
    return rows[0].n;
  }

  /** The admin RPC: lists (dry run) or soft-deletes every eligible model, one batch per transaction. */
  async cleanup(actor: Actor, options: { dryRun: boolean; batchSize?: number }, holder: string): Promise<CleanupResult> {
    if (!actor.caller.roles.includes("admin")) throw accessDenied("CleanupExpiredModels needs the admin role");
    if (options.batchSize !== undefined && (options.batchSize < 0 || options.batchSize > MAX_BATCH)) {
      throw invalidArgument("batchSize", `must be 0 to ${MAX_BATCH}`);
    }
    const result = await this.run({ ...options, trigger: "manual", holder, actor });
    await recordAudit(this.knex, {
      ...byActor(actor),
      action: options.dryRun ? "cleanup.dry_run" : "cleanup.run",
      details: { eligible: result.eligible, cleaned: result.cleaned, batches: result.batches },
    });
    return result;
  }

  async run(options: RunOptions): Promise<CleanupResult> {
    const now = this.clock();
    const eligible = await this.countEligible(now);
    this.metrics?.modelsEligible.set(eligible);
    const trigger = options.dryRun ? "dry_run" : options.trigger;
    if (options.dryRun) {
      this.metrics?.cleanupRuns.inc({ result: "succeeded", trigger });
      return { eligible, cleaned: 0, batches: 0, models: await this.listEligible(now, DRY_RUN_LIST_MAX) };
    }
    const batchSize = options.batchSize || this.rules.batchSize;
    const [run] = await this.knex("cleanup_runs").insert({ trigger, holder: options.holder, eligible }).returning("id");
    const runId = (run as { id: number }).id;
    const actor: Actor = options.actor ?? {
      caller: makeCaller(CLEANUP_ACTOR_ID, ["admin"]),
      requestId: `cleanup-run-${runId}`,
      clientAddress: "internal",
    };
    let cleaned = 0;
    let batches = 0;
    try {
      for (;;) {
        const ids = await this.cleanBatch(now, batchSize, actor, runId);
        if (ids.length === 0) break;
        cleaned += ids.length;
        batches++;
        this.metrics?.modelsCleaned.inc(ids.length);
        if (ids.length < batchSize) break;
        await options.afterBatch?.();
      }
      await this.knex("cleanup_runs").where("id", runId).update({ status: "succeeded", cleaned, batches, finished_at: this.knex.raw("clock_timestamp()") });
      this.metrics?.cleanupRuns.inc({ result: "succeeded", trigger });
      return { eligible, cleaned, batches, models: [] };
    } catch (error) {
      this.metrics?.cleanupRuns.inc({ result: "failed", trigger });
      await this.knex("cleanup_runs")
        .where("id", runId)
        .update({ status: "failed", error: String((error as Error)?.message ?? error).slice(0, 1000), finished_at: this.knex.raw("clock_timestamp()") })
        .catch(() => undefined);
      throw error;
    }
  }

  /**
   * Soft-deletes up to `limit` eligible models in one short transaction. SKIP LOCKED leaves rows
   * another writer holds (an activation, another cleaner) for a later batch; the condition is
   * re-checked on the locked row, so a model that changed meanwhile is not deleted. The
   * model-change listeners run in the same transaction: caches, file references, shares and
   * audit follow the deletions as they do for DeleteVoiceModel. The run's progress counts commit
   * with the batch, so a run killed midway still reports exactly what it cleaned.
   */
  private async cleanBatch(now: Date, limit: number, actor: Actor, runId: number): Promise<string[]> {
    const cond = eligibleCondition(this.rules, now);
    return inTransaction(this.knex, async (trx) => {
      const { rows } = await trx.raw(
        `WITH batch AS (
           SELECT v.id FROM voice_models v WHERE ${cond.sql}
           ORDER BY v.created_at, v.id LIMIT ? FOR UPDATE SKIP LOCKED)
         UPDATE voice_models m SET deleted_at = now(), updated_at = now(), version = m.version + 1
           FROM batch WHERE m.id = batch.id
         RETURNING m.*`,
        [...cond.bindings, limit],
      );
      const cleaned = (rows as VoiceModelRow[]).map(toRecord);
      const ids = cleaned.map((m) => m.id);
      await this.notify(trx, cleaned.map((model) => ({ kind: "deleted" as const, model })), actor);
      if (ids.length > 0) {
        await trx("cleanup_runs").where("id", runId).update({ cleaned: trx.raw("cleaned + ?", [ids.length]), batches: trx.raw("batches + 1") });
      }
      return ids;
    });
  }

  private async listEligible(now: Date, limit: number): Promise<ExpiringModel[]> {
    const cond = eligibleCondition(this.rules, now);
    const { rows } = await this.knex.raw(
      `SELECT v.id, u.last_used_at FROM voice_models v LEFT JOIN usage_totals u ON u.model_id = v.id
        WHERE ${cond.sql} ORDER BY v.created_at, v.id LIMIT ?`,
      [...cond.bindings, limit],
    );
    return this.describe(rows as Array<{ id: string; last_used_at: Date | null }>);
  }

  /**
   * A user's live, inactive, low-quality models that are or become eligible within `withinDays`
   * if nothing changes: eligible_at is when both the age and the no-usage criteria hold.
   */
  async listExpiring(actor: Actor, requestedUserId: string | undefined, withinDays: number | undefined): Promise<ExpiringModel[]> {
    const userId = resolveTargetUser(actor.caller, requestedUserId);
    const days = withinDays === undefined || withinDays === 0 ? 30 : withinDays;
    if (!Number.isInteger(days) || days < 0 || days > 365) throw invalidArgument("withinDays", "must be 0 to 365");
    const now = this.clock();
    const { rows } = await this.knex.raw(
      `SELECT * FROM (
         SELECT v.id, u.last_used_at,
                greatest(v.created_at + make_interval(days => ?), coalesce(u.last_used_at + make_interval(days => ?), '-infinity')) AS eligible_at
           FROM voice_models v LEFT JOIN usage_totals u ON u.model_id = v.id
          WHERE v.user_id = ? AND v.deleted_at IS NULL AND NOT v.is_active AND v.quality_score < ?::numeric
            ${this.rules.includeShared ? "" : "AND NOT EXISTS (SELECT 1 FROM model_shares s WHERE s.model_id = v.id)"}
       ) e
       WHERE e.eligible_at <= ?::timestamptz + make_interval(days => ?)
       ORDER BY e.eligible_at, e.id LIMIT 1000`,
      [this.rules.minAgeDays, this.rules.unusedDays, userId, (this.rules.maxQualityMillis / 1000).toFixed(3), now.toISOString(), days],
    );
    const described = await this.describe(rows as Array<{ id: string; last_used_at: Date | null; eligible_at: Date }>);
    return described;
  }

  private async describe(rows: Array<{ id: string; last_used_at: Date | null; eligible_at?: Date }>): Promise<ExpiringModel[]> {
    const out: ExpiringModel[] = [];
    for (const row of rows) {
      const model = await models.findModel(this.knex, row.id);
      if (!model) continue;
      const lastUsed = row.last_used_at ?? undefined;
      const eligibleAt =
        row.eligible_at ??
        new Date(Math.max(model.createdAt.getTime() + this.rules.minAgeDays * 86_400_000, lastUsed ? lastUsed.getTime() + this.rules.unusedDays * 86_400_000 : 0));
      out.push({ model, eligibleAt, reasons: reasonsFor(this.rules, model, lastUsed) });
    }
    return out;
  }
}
