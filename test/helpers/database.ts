import { randomBytes } from "node:crypto";
import pg from "pg";
import { openDatabase, type Database } from "../../src/db/connection";
import { migrateToLatest } from "../../src/db/migrate";
import { TEST_DATABASE_URL, TEST_DB } from "./env";

/** A database a test file owns: an in-memory PGlite, or a fresh PostgreSQL database. */
export interface TestDatabase {
  readonly db: Database;
  /** The PostgreSQL URL of the database; undefined on PGlite. */
  readonly url: string | undefined;
  /** Closes the connection and drops the database. */
  dispose(): Promise<void>;
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The URL of another database on the same server as TEST_DATABASE_URL. */
export function databaseUrl(name: string): string {
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Creates an empty, uniquely named PostgreSQL database (vm_test_<random>). */
export async function createPostgresDatabase(): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `vm_test_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  return {
    name,
    url: databaseUrl(name),
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined),
  };
}

/** Opens a migrated database of the kind TEST_DB names. */
export async function createTestDatabase(): Promise<TestDatabase> {
  if (TEST_DB === "pglite") {
    const db = await openDatabase({});
    await migrateToLatest(db.knex);
    return { db, url: undefined, dispose: () => db.close() };
  }
  const created = await createPostgresDatabase();
  try {
    const db = await openDatabase({ url: created.url, poolMax: 10 });
    await migrateToLatest(db.knex);
    return {
      db,
      url: created.url,
      async dispose() {
        try {
          await db.close();
        } finally {
          await created.drop();
        }
      },
    };
  } catch (error) {
    await created.drop();
    throw error;
  }
}
