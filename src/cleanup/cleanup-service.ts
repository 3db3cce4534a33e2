import type { Knex } from "knex";
import { byActor, recordAudit } from "../audit/audit-log";
import { resolveTargetUser } from "../auth/caller";
import { inTransaction } from "../db/transaction";
import { accessDenied, invalidArgument } from "../errors";
import type { ServiceMetrics } from "../metrics/service-metrics";
import { makeCaller } from "../auth/caller";
import { ChangeLog, type Actor, type ModelWrite } from "../voice-models/model-events";
import * as models from "../voice-models/repository";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import { candidateCondition, eligibleCondition, reasonsFor, type CleanupRules } from "./eligibility";

export const DRY_RUN_LIST_MAX = 1000;
const EXPIRING_LIST_MAX = 1000;
const DAY_MS = 86_400_000;
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
    /** The model writes' transaction, whose changes reach the listeners (caches, files, shares, audit). */
    private readonly write: ModelWrite = (_actor, fn) => inTransaction(knex, (trx) => fn(trx, new ChangeLog())),
    private readonly clock: () => Date = () => new Date(),
  ) {}

  /** How many models are eligible now. */
  async countEligible(now = this.clock()): Promise<number> {
    return models.countWhere(this.knex, eligibleCondition(this.rules, now));
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
   * Soft-deletes up to `limit` eligible models in one short transaction (rows another writer
   * holds, an activation or another cleaner, are left for a later batch). The model-change
   * listeners run in the same transaction: caches, file references, shares and audit follow the
   * deletions as they do for DeleteVoiceModel. The run's progress counts commit with the batch,
   * so a run killed midway still reports exactly what it cleaned.
   */
  private async cleanBatch(now: Date, limit: number, actor: Actor, runId: number): Promise<string[]> {
    const cond = eligibleCondition(this.rules, now);
    return this.write(actor, async (trx, log) => {
      const ids = (await models.softDeleteWhere(trx, log, cond, limit)).map((m) => m.id);
      if (ids.length > 0) {
        await trx("cleanup_runs").where("id", runId).update({ cleaned: trx.raw("cleaned + ?", [ids.length]), batches: trx.raw("batches + 1") });
      }
      return ids;
    });
  }

  private async listEligible(now: Date, limit: number): Promise<ExpiringModel[]> {
    const found = await models.findWhere(this.knex, eligibleCondition(this.rules, now), limit);
    const used = await this.lastUsed(found.map((m) => m.id));
    return found.map((model) => this.describe(model, used.get(model.id)));
  }

  /**
   * A user's live, inactive, low-quality models that are or become eligible within `withinDays`
   * if nothing changes: eligible_at is when both the age and the no-usage criteria hold.
   */
  async listExpiring(actor: Actor, requestedUserId: string | undefined, withinDays: number | undefined): Promise<ExpiringModel[]> {
    const userId = resolveTargetUser(actor.caller, requestedUserId);
    const days = withinDays === undefined || withinDays === 0 ? 30 : withinDays;
    if (!Number.isInteger(days) || days < 0 || days > 365) throw invalidArgument("withinDays", "must be 0 to 365");
    const horizon = this.clock().getTime() + days * DAY_MS;
    const candidates = await models.findWhere(this.knex, candidateCondition(this.rules, userId));
    const used = await this.lastUsed(candidates.map((m) => m.id));
    return candidates
      .map((model) => this.describe(model, used.get(model.id)))
      .filter((e) => e.eligibleAt.getTime() <= horizon)
      .sort((a, b) => a.eligibleAt.getTime() - b.eligibleAt.getTime() || (a.model.id < b.model.id ? -1 : a.model.id > b.model.id ? 1 : 0))
      .slice(0, EXPIRING_LIST_MAX);
  }

  /** When the models were last used (usage totals), for those ever used. */
  private async lastUsed(ids: string[]): Promise<Map<string, Date>> {
    if (ids.length === 0) return new Map();
    const rows = (await this.knex("usage_totals").whereIn("model_id", ids).whereNotNull("last_used_at").select("model_id", "last_used_at")) as Array<{
      model_id: string;
      last_used_at: Date;
    }>;
    return new Map(rows.map((r) => [r.model_id, r.last_used_at]));
  }

  /** Eligible once both the age and the no-usage criteria hold. */
  private describe(model: VoiceModelRecord, lastUsed: Date | undefined): ExpiringModel {
    const eligibleAt = new Date(
      Math.max(model.createdAt.getTime() + this.rules.minAgeDays * DAY_MS, lastUsed ? lastUsed.getTime() + this.rules.unusedDays * DAY_MS : 0),
    );
    return { model, eligibleAt, reasons: reasonsFor(this.rules, model, lastUsed) };
  }
}
