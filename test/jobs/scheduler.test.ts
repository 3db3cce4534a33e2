import pino from "pino";
import { holdLease, Scheduler, type Job } from "../../src/jobs/scheduler";
import { createTestDatabase, type TestDatabase } from "../helpers/database";

const log = pino({ level: "silent" });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let database: TestDatabase;
beforeAll(async () => (database = await createTestDatabase()));
afterAll(() => database.dispose());

/** Polls until check() is true, for up to ms. */
async function eventually(check: () => boolean, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; !check(); await sleep(20)) if (Date.now() > end) throw new Error("timed out");
}

const oneInstance = (name: string, intervalMs: number, run: Job["run"]): Job => ({ name, intervalMs, mode: { kind: "one-instance", leaseMs: 300 }, run });

describe("one-instance jobs (job_leases)", () => {
  test("two instances with the same job: only one runs it; when it stops, the other takes over", async () => {
    const knex = database.db.knex;
    const runs = { a: 0, b: 0 };
    const instance = (holder: "a" | "b") => {
      const scheduler = new Scheduler(knex, holder, log);
      scheduler.add(oneInstance("test-job", 50, async () => void runs[holder]++));
      scheduler.start();
      return scheduler;
    };
    const a = instance("a");
    await eventually(() => runs.a + runs.b > 0);
    const b = instance("b");
    const first = runs.a > 0 ? "a" : "b";
    const second = first === "a" ? "b" : "a";
    // Both tick at least every 50 ms: by the time the holder has run ten more times, the other has
    // had about as many chances, and took none.
    const before = runs[first];
    await eventually(() => runs[first] >= before + 10);
    expect(runs[second]).toBe(0);

    // A graceful stop hands the lease back: the other instance runs within a few ticks.
    await (first === "a" ? a : b).stop();
    await eventually(() => runs[second] > 0, 1_000);
    await (first === "a" ? b : a).stop();
  });

  test("a holder that died (stopped renewing) loses the job once its lease lapses", async () => {
    const knex = database.db.knex;
    const leaseTakenAt = Date.now();
    expect(await holdLease(knex, "lapsing-job", "dead-instance", 300)).toBe(true);
    expect(await holdLease(knex, "lapsing-job", "live-instance", 300)).toBe(false);
    let runs = 0;
    let firstRunAt = 0;
    const live = new Scheduler(knex, "live-instance", log);
    live.add(oneInstance("lapsing-job", 50, async () => void (runs++ === 0 && (firstRunAt = Date.now()))));
    live.start();
    await eventually(() => runs > 0, 2_000);
    // Not before the dead holder's lease lapsed (the database's clock decides; a little slack).
    expect(firstRunAt - leaseTakenAt).toBeGreaterThanOrEqual(250);
    await live.stop();
    // Jobs are independent: another job's lease is its own.
    expect(await holdLease(knex, "other-job", "dead-instance", 300)).toBe(true);
  });

  test("a long run renews its lease between batches; a lost lease stops it", async () => {
    const knex = database.db.knex;
    const scheduler = new Scheduler(knex, "renewing", log);
    let renewals = 0;
    let lost: unknown;
    const job = oneInstance("long-job", 60_000, async (lease) => {
      for (let batch = 0; batch < 3; batch++) {
        await sleep(200); // longer, all told, than the 300 ms lease
        await lease.renew();
        renewals++;
      }
      // Another instance takes the lease (as after a lapse): the next renewal says so.
      await knex("job_leases").where({ name: "long-job" }).update({ holder: "usurper" });
      await lease.renew().catch((error: unknown) => (lost = error));
    });
    scheduler.add(job);
    await scheduler.tick(job);
    expect(renewals).toBe(3);
    expect(String(lost)).toMatch(/lease was lost/);
    await scheduler.stop();
  });
});

describe("every-instance jobs", () => {
  test("never two runs at once; a failed run is retried next tick; a flush job runs once more at stop", async () => {
    const scheduler = new Scheduler(database.db.knex, "solo", log);
    let active = 0;
    let overlapped = false;
    let runs = 0;
    let flushes = 0;
    scheduler.add(
      {
        name: "slow",
        intervalMs: 10,
        mode: { kind: "every-instance" },
        async run() {
          overlapped ||= active > 0;
          active++;
          runs++;
          await sleep(40);
          active--;
          if (runs === 1) throw new Error("first run fails");
        },
      },
      { name: "flush", intervalMs: 0, mode: { kind: "every-instance" }, runAtStop: true, run: async () => void flushes++ },
    );
    scheduler.start();
    await eventually(() => runs >= 3);
    await scheduler.stop();
    expect(overlapped).toBe(false);
    expect(flushes).toBe(1);
  });
});
