import type { Knex } from "knex";
import type { Logger } from "pino";
import type { GovernanceConfig } from "../config";
import type { Job } from "../jobs/scheduler";
import type { ServiceMetrics } from "../metrics/service-metrics";
import { purgeAuditEvents } from "./audit-log";

const HOURLY = 3_600_000;

/**
 * Periodic work of every instance (all of it idempotent, so no leader is needed): flushing RPC
 * counters to metric_samples for the fleet-wide alerts (once more at stop), and dropping audit
 * events past their retention, rate-limit rows past every window and metric samples older than a
 * day.
 */
export function housekeepingJobs(options: { knex: Knex; metrics: ServiceMetrics; config: GovernanceConfig; log: Logger }): Job[] {
  const { knex, metrics, config, log } = options;
  const { create, update, analytics, backup } = config.rateLimits;
  const maxWindow = Math.max(create.windowSeconds, update.windowSeconds, analytics.windowSeconds, backup.windowSeconds);
  return [
    {
      name: "metrics flush",
      intervalMs: config.metricsFlushIntervalMs,
      mode: { kind: "every-instance" },
      runAtStop: true,
      run: () => metrics.flushTo(knex),
    },
    {
      name: "housekeeping",
      intervalMs: HOURLY,
      mode: { kind: "every-instance" },
      async run() {
        const audit = await purgeAuditEvents(knex, config.auditRetentionDays);
        await knex.raw(`DELETE FROM rate_limit_hits WHERE at < now() - make_interval(secs => ?)`, [maxWindow]);
        await knex.raw(`DELETE FROM metric_samples WHERE bucket < now() - interval '1 day'`);
        if (audit) log.info({ deleted: audit }, "audit events past retention deleted");
      },
    },
  ];
}
