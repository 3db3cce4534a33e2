import type { Logger } from "pino";
import { housekeepingJobs } from "../audit/housekeeping";
import { cleanupJob } from "../cleanup/cleanup-job";
import type { Config } from "../config";
import type { Database } from "../db/connection";
import { Scheduler, type JobMode } from "../jobs/scheduler";
import type { Domain } from "./domain";

/**
 * All periodic work of an instance. Fleet-wide purges run on one instance at a time, under a lease
 * that lasts two intervals and 10 s (a late tick or a slow database does not hand the job over).
 */
export function periodicJobs(domain: Domain, { config, db, log, instanceId }: { config: Readonly<Config>; db: Database; log: Logger; instanceId: string }) {
  const { caches, metrics, cleanup, mover, usage, retention, uploads, erasure, erasedUsers, events, backups } = domain;
  const fleetWide = (intervalMs: number): JobMode => ({ kind: "one-instance", leaseMs: 2 * intervalMs + 10_000 });
  const { cleanup: cleanupConfig } = config.governance;
  const jobs = new Scheduler(db.knex, instanceId, log);
  jobs.add(
    ...caches.jobs(),
    ...housekeepingJobs({ knex: db.knex, metrics, config: config.governance, log }),
    cleanupJob({ knex: db.knex, cleanup, intervalMs: cleanupConfig.intervalMs, leaseMs: cleanupConfig.leaseMs, holder: instanceId, log }),
    mover.job(60_000),
    // A backstop for erasures whose NOTIFY this instance missed (one small read a minute).
    { name: "erased-users", intervalMs: 60_000, mode: { kind: "every-instance" }, run: () => erasedUsers.reload("recent") },
    { name: "event-retention", intervalMs: config.events.pruneIntervalMs, mode: fleetWide(config.events.pruneIntervalMs), run: () => events.prune() },
    { name: "usage-purge", intervalMs: config.usage.purgeIntervalMs, mode: fleetWide(config.usage.purgeIntervalMs), run: () => usage.purgeExpired() },
    // Upload sessions idle past UPLOAD_EXPIRY_HOURS: rows and staged chunks.
    { name: "upload-expiry", intervalMs: config.files.purgeIntervalMs, mode: fleetWide(config.files.purgeIntervalMs), run: () => uploads.sweepExpired() },
    {
      name: "file-retention",
      intervalMs: config.files.purgeIntervalMs,
      mode: fleetWide(config.files.purgeIntervalMs),
      // Backups a withdrawal marked and could not rewrite at once are retried here.
      run: () =>
        retention
          .runOnce()
          .then(() => erasure.resumeAll())
          .then(() => backups.rewritePending().then(() => undefined, (err) => log.error({ err }, "backup rewrite failed; will retry"))),
    },
  );
  return jobs;
}
