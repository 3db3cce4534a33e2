import knexFactory, { type Knex } from "knex";
import path from "node:path";
import pg from "pg";
import { withCallDeadlines } from "./call-deadline";
import { lockDataDir } from "./data-dir-lock";

export type DatabaseKind = "postgres" | "pglite";

export interface Database {
  readonly kind: DatabaseKind;
  readonly knex: Knex;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** PostgreSQL URL; undefined opens PGlite. */
  url?: string;
  /** PGlite folder; undefined with no url means an in-memory PGlite (tests). */
  pgliteDir?: string;
  poolMax?: number;
  /** How long a query waits for a free pooled connection before failing as overloaded (ms). */
  acquireTimeoutMs?: number;
}

const OID = { INT8: 20, NUMERIC: 1700 } as const;
// Both backends return counts, sizes and scores as JS numbers (pg would give strings).
const parsers: Record<number, (value: string) => number> = {
  [OID.INT8]: Number,
  [OID.NUMERIC]: Number,
};

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.url) return openPostgres(options.url, options.poolMax ?? 10, options.acquireTimeoutMs ?? 5_000);
  return openPglite(options.pgliteDir);
}

function openPostgres(url: string, poolMax: number, acquireTimeoutMs: number): Database {
  const knex = knexFactory({
    client: withCallDeadlines(require("knex/lib/dialects/postgres")),
    connection: {
      connectionString: url,
      types: {
        getTypeParser: (oid: number, format: "text") => parsers[oid] ?? pg.types.getTypeParser(oid, format),
      },
    } as Knex.PgConnectionConfig,
    pool: { min: 0, max: poolMax },
    // Fail fast while the database is down instead of queueing callers for a minute.
    acquireConnectionTimeout: acquireTimeoutMs,
  });
  return { kind: "postgres", knex, close: () => knex.destroy() };
}

async function openPglite(dir: string | undefined): Promise<Database> {
  const { PGlite } = await import("@electric-sql/pglite");
  const { default: ClientPgLite } = await import("knex-pglite");
  const release = dir ? lockDataDir(dir) : () => {};
  try {
    const pglite = await PGlite.create(dir ? path.join(dir, "pglite") : undefined, { parsers });
    const knex = knexFactory({
      client: withCallDeadlines(ClientPgLite as never),
      dialect: "postgres",
      connection: () => ({ pglite }) as object,
    } as Knex.Config);
    return {
      kind: "pglite",
      knex,
      async close() {
        try {
          // knex-pglite closes the PGlite when it destroys its one pooled connection.
          await knex.destroy();
          if (!pglite.closed) await pglite.close();
        } finally {
          release();
        }
      },
    };
  } catch (error) {
    release();
    throw error;
  }
}
