import type { Knex } from "knex";
import type { Caller } from "../auth/caller";
import type { GovernanceConfig } from "../config";
import { accessDenied } from "../errors";
import * as modelRepo from "../voice-models/repository";
import { storedBytes } from "./storage";

export interface AlertState {
  name: string;
  firing: boolean;
  severity: "warning" | "critical";
  value: number;
  threshold: number;
  summary: string;
}

/**
 * The alert rules of ops/prometheus/alerts.yml, evaluated from PostgreSQL so every instance
 * sees the whole fleet: stored bytes and quality from the tables, RPC traffic from the counters
 * every instance flushes to metric_samples, cleanup health from cleanup_runs.
 */
export async function evaluateAlerts(knex: Knex, config: GovernanceConfig["alerts"]): Promise<AlertState[]> {
  const [storage, quality, traffic, cleanup] = await Promise.all([
    storedBytes(knex),
    modelRepo.completedQuality(knex),
    knex.raw(
      `SELECT coalesce(sum(value) FILTER (WHERE name = 'rpc_calls'), 0)::float8 AS calls,
              coalesce(sum(value) FILTER (WHERE name = 'rpc_server_errors'), 0)::float8 AS errors
         FROM metric_samples WHERE bucket >= date_trunc('minute', now()) - make_interval(mins => ?)`,
      [config.errorWindowMinutes],
    ),
    knex.raw(`SELECT status, eligible FROM cleanup_runs WHERE status <> 'running' ORDER BY started_at DESC, id DESC LIMIT 1`),
  ]);
  const bytes = storage.total;
  const quota = config.storageQuotaBytes;
  const used = quota > 0 ? bytes / quota : 0;
  const { count: completed, average: avg } = quality;
  const calls = Number(traffic.rows[0].calls);
  const errors = Number(traffic.rows[0].errors);
  const errorRatio = calls > 0 ? errors / calls : 0;
  const lastRun = cleanup.rows[0] as { status: string; eligible: number } | undefined;
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

  return [
    {
      name: "VoiceModelStorageHigh",
      firing: quota > 0 && used > 0.8,
      severity: "warning",
      value: used,
      threshold: 0.8,
      summary: quota > 0 ? `storage ${bytes} of ${quota} bytes used (${pct(used)})` : "no storage quota configured (STORAGE_QUOTA_BYTES)",
    },
    {
      name: "VoiceModelAverageQualityLow",
      firing: completed > 0 && avg < config.minAverageQuality,
      severity: "warning",
      value: avg,
      threshold: config.minAverageQuality,
      summary: `average quality of ${completed} live completed models is ${Number(avg).toFixed(3)}`,
    },
    {
      name: "VoiceModelHighErrorRate",
      firing: errorRatio > config.maxErrorRatio,
      severity: "critical",
      value: errorRatio,
      threshold: config.maxErrorRatio,
      summary: `${errors} server errors in ${calls} calls over the last ${config.errorWindowMinutes} minutes (${pct(errorRatio)})`,
    },
    {
      name: "VoiceModelCleanupFailing",
      firing: lastRun?.status === "failed",
      severity: "warning",
      value: lastRun?.status === "failed" ? 1 : 0,
      threshold: 1,
      summary: lastRun ? `last cleanup run ${lastRun.status}` : "no cleanup run yet",
    },
    {
      name: "VoiceModelCleanupBacklog",
      firing: (lastRun?.eligible ?? 0) > config.maxEligibleModels,
      severity: "warning",
      value: lastRun?.eligible ?? 0,
      threshold: config.maxEligibleModels,
      summary: `${lastRun?.eligible ?? 0} models were eligible for cleanup at the last run`,
    },
  ];
}

/** GetAlerts: the rules' state, for admins only. */
export async function alertsFor(knex: Knex, caller: Caller, config: GovernanceConfig["alerts"]): Promise<AlertState[]> {
  if (!caller.roles.includes("admin")) throw accessDenied("GetAlerts needs the admin role");
  return evaluateAlerts(knex, config);
}
