import type { Knex } from "knex";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ModelChangeListener } from "../voice-models/model-events";
import * as modelRepo from "../voice-models/repository";
import { RpcStats } from "./rpc-stats";
import { storedBytes } from "./storage";

/** Server-side failures count towards the error-rate alert; client mistakes (4xx) do not. */
export const SERVER_ERROR_CODES = new Set(["UNKNOWN", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "DEADLINE_EXCEEDED"]);

/** Cache statistics as the cache reports them (read at scrape time). */
export interface CacheStats {
  hits: number;
  misses: number;
  /** The in-process cache's accounted size: models held, and the users they belong to. */
  models?: number;
  users?: number;
}

/**
 * Every Prometheus metric of one app instance, in its own registry (tests run several apps in one
 * process). Database-backed figures (storage, usage) are read when /metrics is scraped.
 */
export class ServiceMetrics {
  readonly registry = new Registry();
  private cacheStats: (() => Record<string, CacheStats>) | undefined;
  /** Calls and server errors since the last flush to metric_samples (see flushTo). */
  private pending = { calls: 0, errors: 0 };

  readonly rpcErrors = new Counter({
    name: "voice_model_rpc_errors_total",
    help: "RPCs that ended in an error, by method and status code.",
    labelNames: ["method", "code"] as const,
    registers: [this.registry],
  });
  private readonly rpcStats = new RpcStats(this.registry, {
    requests: "voice_model_rpc_requests_total",
    duration: "voice_model_rpc_duration_seconds",
  });
  readonly modelsCreated = new Counter({
    name: "voice_model_models_created_total",
    help: "Voice models created, by provider.",
    labelNames: ["provider"] as const,
    registers: [this.registry],
  });
  readonly qualityScore = new Histogram({
    name: "voice_model_quality_score",
    help: "Quality scores of models as they are created or updated.",
    buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1],
    registers: [this.registry],
  });
  readonly cleanupRuns = new Counter({
    name: "voice_model_cleanup_runs_total",
    help: "Cleanup runs by result (succeeded, failed) and trigger (scheduled, manual, dry_run).",
    labelNames: ["result", "trigger"] as const,
    registers: [this.registry],
  });
  readonly modelsCleaned = new Counter({
    name: "voice_model_cleanup_models_cleaned_total",
    help: "Models soft-deleted by cleanup.",
    registers: [this.registry],
  });
  readonly modelsEligible = new Gauge({
    name: "voice_model_cleanup_eligible_models",
    help: "Models eligible for cleanup when the last run (or dry run) on this instance started.",
    registers: [this.registry],
  });
  readonly rateLimitRefusals = new Counter({
    name: "voice_model_rate_limit_refusals_total",
    help: "Calls refused by a rate limit, by operation.",
    labelNames: ["operation"] as const,
    registers: [this.registry],
  });

  constructor(knex: Knex, options: { storageQuotaBytes: number }) {
    const registry = this.registry;
    // The standard process_* and nodejs_* series every Node exporter serves (CPU, RSS, heap, GC, event loop lag).
    collectDefaultMetrics({ register: registry });
    new Gauge({
      name: "voice_model_storage_quota_bytes",
      help: "The storage quota in bytes (STORAGE_QUOTA_BYTES); 0 when none is configured.",
      registers: [registry],
    }).set(options.storageQuotaBytes);
    new Gauge({
      name: "voice_model_storage_bytes",
      help: "Model sizes as recorded on the models, by provider and state (live, deleted: soft-deleted but retained).",
      labelNames: ["provider", "state"] as const,
      registers: [registry],
      async collect() {
        const rows = await modelRepo.sizesByProvider(knex);
        this.reset();
        for (const row of rows) this.set({ provider: row.provider, state: row.deleted ? "deleted" : "live" }, row.bytes);
      },
    });
    new Gauge({
      name: "voice_model_storage_used_bytes",
      help: "All stored bytes: model files (live and deleted-but-retained), backups, and declared sizes of models stored elsewhere.",
      labelNames: ["kind"] as const,
      registers: [registry],
      async collect() {
        const bytes = await storedBytes(knex);
        this.set({ kind: "model_files" }, bytes.modelFiles);
        this.set({ kind: "backups" }, bytes.backups);
        this.set({ kind: "declared" }, bytes.declared);
      },
    });
    new Gauge({
      name: "voice_model_average_quality_score",
      help: "Average quality score of live completed models.",
      registers: [registry],
      async collect() {
        this.set((await modelRepo.completedQuality(knex)).average);
      },
    });
    new Gauge({
      name: "voice_model_usage_events",
      help: "Usage events recorded, all time (from the usage totals).",
      registers: [registry],
      async collect() {
        const { rows } = await knex.raw(`SELECT coalesce(sum(usage_count), 0)::float8 AS n FROM usage_totals`);
        this.set(Number(rows[0].n));
      },
    });
    const cacheStats = () => this.cacheStats?.() ?? {};
    // Counters though the figures are read at scrape time: the source counts monotonically since start.
    new Counter({
      name: "voice_model_cache_hits_total",
      help: "Cache hits since this instance started, by cache (the cache tables and the in-process active-model cache).",
      labelNames: ["cache"] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [cache, stats] of Object.entries(cacheStats())) this.inc({ cache }, stats.hits);
      },
    });
    new Counter({
      name: "voice_model_cache_misses_total",
      help: "Cache misses since this instance started, by cache.",
      labelNames: ["cache"] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [cache, stats] of Object.entries(cacheStats())) this.inc({ cache }, stats.misses);
      },
    });
    // The in-process cache's accounted size, for reading its share of the RSS beside process_resident_memory_bytes.
    new Gauge({
      name: "voice_model_in_process_cache_models",
      help: "Models the in-process cache holds now (its accounted size, bounded by IN_PROCESS_CACHE_ENTRIES).",
      registers: [registry],
      collect() {
        this.set(cacheStats().in_process?.models ?? 0);
      },
    });
    new Gauge({
      name: "voice_model_in_process_cache_users",
      help: "Users with entries in the in-process cache now.",
      registers: [registry],
      collect() {
        this.set(cacheStats().in_process?.users ?? 0);
      },
    });
  }

  /** Where cache hit/miss figures come from (the cache registers itself here). */
  setCacheStatsSource(source: () => Record<string, CacheStats>): void {
    this.cacheStats = source;
  }

  /** One finished RPC. `code` is "OK" or a gRPC code name such as "NOT_FOUND". */
  observeRpc(method: string, code: string, seconds: number): void {
    this.rpcStats.observe(method, code, seconds);
    this.pending.calls++;
    if (code !== "OK") this.rpcErrors.inc({ method, code });
    if (SERVER_ERROR_CODES.has(code)) this.pending.errors++;
  }

  /** Model writes: creation rate and the quality histogram. */
  readonly onModelChanges: ModelChangeListener = async (_trx, changes) => {
    for (const change of changes) {
      if (change.kind === "created") {
        this.modelsCreated.inc({ provider: change.model.provider });
        this.qualityScore.observe(change.model.qualityScore);
      } else if (change.kind === "updated") {
        this.qualityScore.observe(change.model.qualityScore);
      }
    }
  };

  /**
   * Adds this instance's calls and server errors since the last flush to the current minute's
   * fleet-wide totals, so GetAlerts on any instance sees every instance's traffic.
   */
  async flushTo(knex: Knex): Promise<void> {
    const { calls, errors } = this.pending;
    if (calls === 0 && errors === 0) return;
    this.pending = { calls: 0, errors: 0 };
    try {
      await knex.raw(
        `INSERT INTO metric_samples (bucket, name, value)
         VALUES (date_trunc('minute', now()), 'rpc_calls', ?), (date_trunc('minute', now()), 'rpc_server_errors', ?)
         ON CONFLICT (bucket, name, labels) DO UPDATE SET value = metric_samples.value + excluded.value`,
        [calls, errors],
      );
    } catch (error) {
      // Keep the counts for the next flush rather than losing them while the database is away.
      this.pending.calls += calls;
      this.pending.errors += errors;
      throw error;
    }
  }
}
