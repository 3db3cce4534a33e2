import type { Knex } from "knex";
import type { Logger } from "pino";
import type { CleanupService } from "./cleanup-service";

export interface SchedulerOptions {
  knex: Knex;
  cleanup: CleanupService;
  intervalMs: number;
  leaseMs: number;
  /** This instance's id, stored as the lease holder. */
  holder: string;
  log: Logger;
}

/**
 * Runs cleanup every intervalMs on exactly one instance of the fleet. The instance that takes
 * the `cleanup` lease (job_leases) runs, renewing the lease after each batch; when done it keeps
 * the lease until the next run is due, so the fleet runs once per interval. An instance that dies
 * midway stops renewing: its lease lapses after leaseMs, the next instance to tick marks the
 * abandoned run failed and starts over (committed batches stay done; eligibility is re-read).
 */
export class CleanupScheduler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly options: SchedulerOptions) {}

  start(): void {
    if (this.options.intervalMs <= 0 || this.timer) return;
    // Ticks more often than the interval so a lapsed lease is noticed soon after it lapses.
    const tickMs = Math.max(100, Math.min(this.options.intervalMs, this.options.leaseMs / 2));
    this.timer = setInterval(() => {
      if (!this.running) this.running = this.tick().finally(() => (this.running = undefined));
    }, tickMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One attempt: run if this instance gets the lease. Exposed for tests. */
  async tick(): Promise<boolean> {
    const { knex, holder, log } = this.options;
    try {
      if (!(await this.acquire())) return false;
      await knex("cleanup_runs")
        .where("status", "running")
        .update({ status: "failed", error: "abandoned: the instance running it stopped", finished_at: knex.raw("clock_timestamp()") });
      const result = await this.options.cleanup.run({ dryRun: false, trigger: "scheduled", holder, afterBatch: () => this.renew() });
      log.info({ eligible: result.eligible, cleaned: result.cleaned, batches: result.batches }, "scheduled cleanup finished");
      // Hold the lease until the next run is due.
      await knex.raw(`UPDATE job_leases SET expires_at = now() + make_interval(secs => ?) WHERE name = 'cleanup' AND holder = ?`, [
        this.options.intervalMs / 1000,
        holder,
      ]);
      return true;
    } catch (error) {
      log.error({ err: error }, "scheduled cleanup failed");
      return false;
    }
  }

  private async acquire(): Promise<boolean> {
    const { rows } = await this.options.knex.raw(
      `UPDATE job_leases SET holder = ?, expires_at = now() + make_interval(secs => ?)
        WHERE name = 'cleanup' AND expires_at < now() RETURNING name`,
      [this.options.holder, this.options.leaseMs / 1000],
    );
    return rows.length === 1;
  }

  private async renew(): Promise<void> {
    const { rows } = await this.options.knex.raw(
      `UPDATE job_leases SET expires_at = now() + make_interval(secs => ?) WHERE name = 'cleanup' AND holder = ? RETURNING name`,
      [this.options.leaseMs / 1000, this.options.holder],
    );
    if (rows.length !== 1) throw new Error("the cleanup lease was lost; another instance took over");
  }
}
