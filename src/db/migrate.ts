import type { Knex } from "knex";
import { setTimeout as sleep } from "node:timers/promises";
import { migrationSource } from "./migrations";

/**
 * Applies pending migrations under knex's migration lock. Instances starting together race for
 * the lock; a loser waits for the winner and then finds nothing left to do.
 */
export async function migrateToLatest(knex: Knex, waitForLockMs = 120_000): Promise<string[]> {
  const deadline = Date.now() + waitForLockMs;
  for (;;) {
    try {
      const [, applied] = (await knex.migrate.latest({ migrationSource })) as [number, string[]];
      return applied;
    } catch (error) {
      const locked = (error as Error).name === "MigrationLocked" || /already locked/i.test((error as Error).message);
      if (!locked || Date.now() > deadline) throw error;
      await sleep(200 + Math.random() * 300);
    }
  }
}
