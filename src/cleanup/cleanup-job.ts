import type { Knex } from "knex";
import type { Logger } from "pino";
import type { Job } from "../jobs/scheduler";
import type { CleanupService } from "./cleanup-service";

/**
 * Scheduled cleanup, on one instance of the fleet per interval (the `cleanup` lease). The holder
 * renews the lease after each batch; one that dies midway stops renewing, its lease lapses after
 * leaseMs, and the instance that takes over marks the abandoned run failed and starts over
 * (committed batches stay done; eligibility is re-read).
 */
export function cleanupJob(options: { knex: Knex; cleanup: CleanupService; intervalMs: number; leaseMs: number; holder: string; log: Logger }): Job {
  const { knex, cleanup, holder, log } = options;
  return {
    name: "cleanup",
    intervalMs: options.intervalMs,
    mode: { kind: "one-instance", leaseMs: options.leaseMs },
    async run(lease) {
      // Only the lease holder runs cleanup: a run still marked running was left by a dead one.
      await knex("cleanup_runs")
        .where("status", "running")
        .update({ status: "failed", error: "abandoned: the instance running it stopped", finished_at: knex.raw("clock_timestamp()") });
      const result = await cleanup.run({ dryRun: false, trigger: "scheduled", holder, afterBatch: () => lease.renew() });
      log.info({ eligible: result.eligible, cleaned: result.cleaned, batches: result.batches }, "scheduled cleanup finished");
    },
  };
}
