import path from "node:path";

/** Which database this Jest run targets; test/run-suites.mjs runs the suite once per backend. */
export type TestDb = "pglite" | "postgres";

export const TEST_DB: TestDb = process.env.TEST_DB === "postgres" ? "postgres" : "pglite";
export const onPostgres = TEST_DB === "postgres";

/** A PostgreSQL database the tests may create and drop other databases from. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";

/** The HS256 secret every in-process test server is configured with. */
export const JWT_SECRET = "test-only-jwt-secret-0123456789abcdefghijklmnop";

/**
 * The erasure key of every in-process test server (base64 of 32 bytes), so servers a test starts
 * on one database with data folders of their own agree, as a fleet must. A test that wants the
 * data folder's key file passes ERASURE_KEY: undefined.
 */
export const ERASURE_KEY = Buffer.from("test-only-erasure-key-0123456789").toString("base64");

/** The repository root (where package.json and src/ live). */
export const REPO_ROOT = path.resolve(__dirname, "../..");

/**
 * describe() when the condition holds; otherwise describe.skip() with the reason in the title,
 * so the runner's list of skipped tests says why.
 */
export function describeIf(condition: boolean, reason: string) {
  return (title: string, fn: () => void) =>
    condition ? describe(title, fn) : describe.skip(`${title} [skipped on ${TEST_DB}: ${reason}]`, fn);
}

export const describeOnPostgres = describeIf(onPostgres, "needs PostgreSQL (runs in the TEST_DB=postgres pass)");
export const describeOnPglite = describeIf(!onPostgres, "about the embedded PGlite mode (runs in the TEST_DB=pglite pass)");
