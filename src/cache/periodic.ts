import type { Knex } from "knex";
import type { Logger } from "pino";

export interface Periodic {
  /** Stops the timer and waits for a run in progress. */
  stop(): Promise<void>;
}

/** Runs fn every intervalMs, never two runs at once; a failed run is logged and retried next time. */
export function every(intervalMs: number, fn: () => Promise<unknown>, log: Logger, name: string): Periodic {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = fn()
      .then(
        () => undefined,
        (error: Error) => log.warn({ err: error.message }, `${name} failed`),
      )
      .finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

/**
 * every(), on one instance of the fleet: each tick the instance takes or keeps the job's lease
 * in job_leases and runs fn only while it holds it. A lease lasts two intervals and 10 s (a late
 * tick or a slow database does not hand the job over), so a dead holder's lapses and another
 * instance takes over; stop() hands it back at once. The jobs run this way are idempotent, so a
 * run outlasting its lease is wasted work, never wrong.
 */
export function everyOnOneInstance(
  knex: Knex,
  job: { name: string; holder: string },
  intervalMs: number,
  fn: () => Promise<unknown>,
  log: Logger,
): Periodic {
  const periodic = every(intervalMs, async () => (await holdLease(knex, job.name, job.holder, 2 * intervalMs + 10_000)) && fn(), log, job.name);
  return {
    async stop() {
      await periodic.stop();
      // If the database cannot be reached now, the lease simply lapses.
      await knex("job_leases")
        .where({ name: job.name, holder: job.holder })
        .update({ expires_at: knex.raw("'-infinity'") })
        .catch((err: Error) => log.warn({ err: err.message }, `${job.name}: could not hand the lease back`));
    },
  };
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
