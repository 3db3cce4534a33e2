import type { Knex } from "knex";
import type { Logger } from "pino";
import type { GovernanceConfig } from "../config";
import type { ServiceMetrics } from "../metrics/service-metrics";
import { purgeAuditEvents } from "./audit-log";

const HOURLY = 3_600_000;

/**
 * Periodic work of every instance (all of it idempotent, so no leader is needed): flushing RPC
 * counters to metric_samples for the fleet-wide alerts, and dropping audit events past their
 * retention, rate-limit rows past every window and metric samples older than a day.
 */
export function startHousekeeping(options: { knex: Knex; metrics: ServiceMetrics; config: GovernanceConfig; log: Logger }): () => Promise<void> {
  const { knex, metrics, config, log } = options;
  const { create, update, analytics, backup } = config.rateLimits;
  const maxWindow = Math.max(create.windowSeconds, update.windowSeconds, analytics.windowSeconds, backup.windowSeconds);
  const flush = () => metrics.flushTo(knex).catch((err) => log.warn({ err }, "could not flush metrics"));
  const purge = async () => {
    try {
      const audit = await purgeAuditEvents(knex, config.auditRetentionDays);
      await knex.raw(`DELETE FROM rate_limit_hits WHERE at < now() - make_interval(secs => ?)`, [maxWindow]);
      await knex.raw(`DELETE FROM metric_samples WHERE bucket < now() - interval '1 day'`);
      if (audit) log.info({ deleted: audit }, "audit events past retention deleted");
    } catch (err) {
      log.warn({ err }, "housekeeping failed");
    }
  };
  const flushTimer = setInterval(flush, config.metricsFlushIntervalMs);
  const purgeTimer = setInterval(purge, HOURLY);
  flushTimer.unref();
  purgeTimer.unref();
  return async () => {
    clearInterval(flushTimer);
    clearInterval(purgeTimer);
    await flush();
  };
}
