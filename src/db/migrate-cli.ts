// npm run migrate: applies pending migrations to DATABASE_URL (or the embedded PGlite folder).
import { parseConfig } from "../config";
import { openDatabase } from "./connection";
import { migrateToLatest } from "./migrate";

async function main() {
  const config = parseConfig();
  const db = await openDatabase({ url: config.databaseUrl, pgliteDir: config.dataDir });
  try {
    const applied = await migrateToLatest(db.knex);
    process.stdout.write(applied.length ? `applied: ${applied.join(", ")}\n` : "already up to date\n");
  } finally {
    await db.close();
  }
}

main().catch((error: Error) => {
  process.stderr.write(`migrate: ${error.message}\n`);
  process.exit(1);
});
