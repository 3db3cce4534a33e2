import knexFactory, { type Knex } from "knex";
import path from "node:path";
import pg from "pg";
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
}

const OID = { INT8: 20, NUMERIC: 1700 } as const;
// Both backends return counts, sizes and scores as JS numbers (pg would give strings).
const parsers: Record<number, (value: string) => number> = {
  [OID.INT8]: Number,
  [OID.NUMERIC]: Number,
};

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.url) return openPostgres(options.url, options.poolMax ?? 10);
  return openPglite(options.pgliteDir);
}

function openPostgres(url: string, poolMax: number): Database {
  const knex = knexFactory({
    client: "pg",
    connection: {
      connectionString: url,
      types: {
        getTypeParser: (oid: number, format: "text") => parsers[oid] ?? pg.types.getTypeParser(oid, format),
      },
    } as Knex.PgConnectionConfig,
    pool: { min: 0, max: poolMax },
    // Fail fast while the database is down instead of queueing callers for a minute.
    acquireConnectionTimeout: 5_000,
  });
  return { kind: "postgres", knex, close: () => knex.destroy() };
}

async function openPglite(dir: string | undefined): Promise<Database> {
  const { PGlite } = await import("@electric-sql/pglite");
  const { default: ClientPgLite } = await import("knex-pglite");
  const release = dir ? lockDataDir(dir) : () => {};
  try {
    // PGlite's default shared_buffers (128 MB) lives in this process's heap; the service's working
    // set is small and its reads go through its own caches, so 16 MB keeps an idle instance lean.
    const startParams = [...(PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams, "-c", "shared_buffers=16MB"];
    const pglite = await PGlite.create(dir ? path.join(dir, "pglite") : undefined, { parsers, startParams });
    const knex = knexFactory({
      client: ClientPgLite,
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
