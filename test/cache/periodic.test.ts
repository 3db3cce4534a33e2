import pino from "pino";
import { everyOnOneInstance, holdLease } from "../../src/cache/periodic";
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

describe("everyOnOneInstance (job_leases)", () => {
  test("two instances with the same job: only one runs it; when it stops, the other takes over", async () => {
    const knex = database.db.knex;
    const runs = { a: 0, b: 0 };
    const job = (holder: "a" | "b") => everyOnOneInstance(knex, { name: "test-job", holder }, 50, async () => void runs[holder]++, log);
    const a = job("a");
    await eventually(() => runs.a + runs.b > 0);
    const b = job("b");
    const first = runs.a > 0 ? "a" : "b";
    const second = first === "a" ? "b" : "a";
    // Both tick every 50 ms: by the time the holder has run ten more times, the other has had
    // about as many chances, and took none.
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
    const live = everyOnOneInstance(knex, { name: "lapsing-job", holder: "live-instance" }, 50, async () => void (runs++ === 0 && (firstRunAt = Date.now())), log);
    await eventually(() => runs > 0, 2_000);
    // Not before the dead holder's lease lapsed (the database's clock decides; a little slack).
    expect(firstRunAt - leaseTakenAt).toBeGreaterThanOrEqual(250);
    await live.stop();
    // Jobs are independent: another job's lease is its own.
    expect(await holdLease(knex, "other-job", "dead-instance", 300)).toBe(true);
  });
});
