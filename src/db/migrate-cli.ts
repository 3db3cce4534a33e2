// npm run migrate: applies pending migrations to DATABASE_URL (or the embedded PGlite folder).
// They take only transaction-scoped locks and set no session state, so they also run through a
// transaction-pooling PgBouncer; the first line says where they go.
import { parseConfig } from "../config";
import { openDatabase } from "./connection";
import { migrateToLatest } from "./migrate";

async function main() {
  const config = parseConfig();
  process.stdout.write(`migrating ${describeTarget(config.databaseUrl, config.dataDir)}\n`);
  const db = await openDatabase({ url: config.databaseUrl, pgliteDir: config.dataDir });
  try {
    const applied = await migrateToLatest(db.knex);
    process.stdout.write(applied.length ? `applied: ${applied.join(", ")}\n` : "already up to date\n");
  } finally {
    await db.close();
  }
}

/** Where the migrations go, without credentials: host:port/database, or the PGlite folder. */
function describeTarget(databaseUrl: string | undefined, dataDir: string): string {
  if (!databaseUrl) return `the embedded database in ${dataDir}`;
  const url = new URL(databaseUrl);
  return `PostgreSQL at ${url.hostname}:${url.port || "5432"}${url.pathname}`;
}

main().catch((error: Error) => {
  process.stderr.write(`migrate: ${error.message}\n`);
  process.exit(1);
});
