import type { Knex } from "knex";
import { setTimeout as sleep } from "node:timers/promises";
import { migrationSource } from "./migrations";

/**
 * knex creates its bookkeeping tables (and the lock table's one row) before taking its migration
 * lock, so instances starting together on an empty database race there: one fails with
 * "relation already exists", or both insert a lock row, after which every migration run fails
 * with "already locked". Creating them first, one instance at a time under a transaction-scoped
 * advisory lock, with the lock row at a fixed key, closes that race.
 */
async function ensureMigrationTables(knex: Knex): Promise<void> {
  await knex.transaction(async (trx) => {
    await trx.raw("SELECT pg_advisory_xact_lock(hashtext('knex_migrations'))");
    await trx.raw(
      "CREATE TABLE IF NOT EXISTS knex_migrations (id serial PRIMARY KEY, name varchar(255), batch integer, migration_time timestamptz)",
    );
    await trx.raw('CREATE TABLE IF NOT EXISTS knex_migrations_lock ("index" serial PRIMARY KEY, is_locked integer)');
    await trx.raw(
      'INSERT INTO knex_migrations_lock ("index", is_locked) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM knex_migrations_lock)',
    );
  });
}

/**
 * Applies pending migrations under knex's migration lock. Instances starting together race for
 * the lock; a loser waits for the winner and then finds nothing left to do.
 */
export async function migrateToLatest(knex: Knex, waitForLockMs = 120_000): Promise<string[]> {
  const deadline = Date.now() + waitForLockMs;
  await ensureMigrationTables(knex);
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
