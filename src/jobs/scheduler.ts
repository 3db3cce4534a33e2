import type { Knex } from "knex";
import type { Logger } from "pino";

/**
 * Where a job runs: on every instance (work that is per instance, or idempotent and cheap), or on
 * one instance of the fleet at a time, under a lease in job_leases. The lease holder renews it
 * at every tick and runs the job once per interval; a holder that dies stops renewing, its lease
 * lapses after leaseMs and the next instance to tick takes the job over and runs it at once.
 * The jobs run this way are idempotent, so a run that outlasts a lost lease is wasted work, never
 * wrong.
 */
export type JobMode = { kind: "every-instance" } | { kind: "one-instance"; leaseMs: number };

export interface Lease {
  /** Renews the lease now (between the batches of a long run); throws when another instance has it. */
  renew(): Promise<void>;
}

export interface Job {
  name: string;
  /** 0 or less: never scheduled. */
  intervalMs: number;
  mode: JobMode;
  run(lease: Lease): Promise<unknown>;
  /** Runs once more when the scheduler stops (a flush, so nothing counted is lost). */
  runAtStop?: boolean;
}

const EVERY_INSTANCE: Lease = { renew: async () => undefined };

/** One scheduler per instance for all periodic work: never two runs of a job at once, failures logged. */
export class Scheduler {
  private readonly jobs: Job[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly running = new Map<string, Promise<void>>();
  private readonly lastRunAt = new Map<string, number>();
  private stopped = false;

  constructor(
    private readonly knex: Knex,
    /** This instance's id, stored as the lease holder. */
    private readonly holder: string,
    private readonly log: Logger,
  ) {}

  add(...jobs: Job[]): void {
    this.jobs.push(...jobs.filter((job) => job.intervalMs > 0 || job.runAtStop));
  }

  start(): void {
    for (const job of this.jobs) {
      if (job.intervalMs <= 0) continue;
      // A one-instance job ticks often enough to renew its lease and to notice a lapsed one soon.
      const tickMs = job.mode.kind === "one-instance" ? Math.min(job.intervalMs, job.mode.leaseMs / 2) : job.intervalMs;
      const timer = setInterval(() => this.tick(job), tickMs);
      timer.unref();
      this.timers.push(timer);
    }
  }

  /**
   * Stops every timer, waits for the runs in progress, hands this instance's leases back (another
   * instance takes the job at its next tick), then runs the jobs that flush at stop.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    await Promise.all(this.running.values());
    const leased = this.jobs.filter((j) => j.mode.kind === "one-instance").map((j) => j.name);
    if (leased.length > 0) {
      // If the database cannot be reached now, the leases simply lapse.
      await this.knex("job_leases")
        .whereIn("name", leased)
        .where("holder", this.holder)
        .update({ expires_at: this.knex.raw("'-infinity'") })
        .catch((error: Error) => this.log.warn({ err: error }, "could not hand the job leases back"));
    }
    for (const job of this.jobs.filter((j) => j.runAtStop)) await this.runLogged(job, EVERY_INSTANCE);
  }

  /** One tick of a job; exposed so tests can drive a job without waiting for its timer. */
  async tick(job: Job): Promise<void> {
    if (this.stopped || this.running.has(job.name)) return;
    const run = this.attempt(job).finally(() => this.running.delete(job.name));
    this.running.set(job.name, run);
    await run;
  }

  private async attempt(job: Job): Promise<void> {
    if (job.mode.kind === "every-instance") return this.runLogged(job, EVERY_INSTANCE);
    const { leaseMs } = job.mode;
    let held: boolean;
    try {
      held = await holdLease(this.knex, job.name, this.holder, leaseMs);
    } catch (error) {
      this.log.warn({ err: error }, `${job.name}: could not take or renew its lease`);
      return;
    }
    const last = this.lastRunAt.get(job.name);
    if (!held || (last !== undefined && Date.now() - last < job.intervalMs)) return;
    this.lastRunAt.set(job.name, Date.now());
    // The timer goes on ticking (and renewing) only between runs: a long run renews itself.
    const lease: Lease = {
      renew: async () => {
        if (!(await holdLease(this.knex, job.name, this.holder, leaseMs))) throw new Error(`${job.name}: the lease was lost; another instance took over`);
      },
    };
    await this.runLogged(job, lease);
  }

  private async runLogged(job: Job, lease: Lease): Promise<void> {
    try {
      await job.run(lease);
    } catch (error) {
      this.log.warn({ err: error }, `${job.name} failed`);
    }
  }
}

/** Takes the lease if it is free or lapsed, or renews it if `holder` has it; true if held. */
export async function holdLease(knex: Knex, name: string, holder: string, ms: number): Promise<boolean> {
  const { rows } = await knex.raw(
    `INSERT INTO job_leases AS l (name, holder, expires_at) VALUES (?, ?, now() + make_interval(secs => ?))
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
       WHERE l.expires_at < now() OR l.holder = excluded.holder
     RETURNING name`,
    [name, holder, ms / 1000],
  );
  return rows.length === 1;
}
