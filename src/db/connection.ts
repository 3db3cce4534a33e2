import knexFactory, { type Knex } from "knex";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";
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

/**
 * Creates a new PGlite folder (initdb) in a short-lived child process: initdb grows the WebAssembly
 * heap to several hundred MB, which a process never gives back, so the server opening the folder
 * afterwards stays as small as after a restart.
 */
async function initdbInChild(folder: string): Promise<void> {
  if (fs.existsSync(path.join(folder, "PG_VERSION"))) return;
  const moduleUrl = pathToFileURL(require.resolve("@electric-sql/pglite")).href;
  const script = `import(${JSON.stringify(moduleUrl)}).then(async ({ PGlite }) => { await (await PGlite.create(process.argv[1])).close(); })`;
  await new Promise<void>((resolve, reject) => {
    const child = spawn(process.execPath, ["-e", script, folder], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    child.once("error", reject);
    child.once("exit", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(`creating the embedded database in ${folder} failed (${code ?? signal}): ${stderr.trim()}`)),
    );
  });
}

async function openPglite(dir: string | undefined): Promise<Database> {
  const { PGlite } = await import("@electric-sql/pglite");
  const { default: ClientPgLite } = await import("knex-pglite");
  const release = dir ? lockDataDir(dir) : () => {};
  try {
    // PGlite's default shared_buffers (128 MB) lives in this process's heap; the service's working
    // set is small and its reads go through its own caches, so 16 MB keeps an idle instance lean.
    const startParams = [...(PGlite as unknown as { defaultStartParams: string[] }).defaultStartParams, "-c", "shared_buffers=16MB"];
    if (dir) await initdbInChild(path.join(dir, "pglite"));
    const pglite = await PGlite.create(dir ? path.join(dir, "pglite") : undefined, { parsers, startParams });
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
