#!/usr/bin/env node
// npm test: the whole Jest suite once on embedded PGlite and once on real PostgreSQL.
// PostgreSQL is TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres); when it
// cannot be reached that pass is skipped with a loud warning, or fails with REQUIRE_POSTGRES=1.
// Extra arguments go to Jest (e.g. `npm test -- test/list.test.ts`).
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const jestBin = path.join(root, "node_modules", "jest", "bin", "jest.js");
const databaseUrl = process.env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
const requirePostgres = process.env.REQUIRE_POSTGRES === "1";
const jestArgs = process.argv.slice(2);
// A pass that hangs (a test that never settles) fails after this long instead of blocking CI.
const passTimeoutMs = Number(process.env.TEST_PASS_TIMEOUT_MS || 20 * 60_000);
let running; // the Jest process of the current pass

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    if (running) killGroup(running, signal);
    process.exit(130);
  });
}

/** Jest runs in its own process group so its workers end with it. */
function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function banner(lines) {
  const width = Math.max(...lines.map((l) => l.length)) + 4;
  const bar = "!".repeat(width);
  process.stderr.write(`\n${bar}\n${lines.map((l) => `! ${l.padEnd(width - 4)} !`).join("\n")}\n${bar}\n\n`);
}

async function postgresReachable() {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 3_000 });
  client.on("error", () => {});
  try {
    await client.connect();
    await client.query("select 1");
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: error.message || error.code || String(error) };
  } finally {
    await client.end().catch(() => {});
  }
}

/** Runs Jest with TEST_DB=<db>; resolves with its counts from the JSON report. */
function runJest(db) {
  const report = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "vm-jest-")), "report.json");
  // PGlite uses dynamic import internally, which Jest allows only with VM modules enabled.
  const nodeOptions = [process.env.NODE_OPTIONS, "--experimental-vm-modules", "--disable-warning=ExperimentalWarning"]
    .filter(Boolean)
    .join(" ");
  process.stderr.write(`\n=== Jest on ${db}${db === "postgres" ? ` (${databaseUrl})` : ""} ===\n\n`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [jestBin, "--json", `--outputFile=${report}`, ...jestArgs], {
      cwd: root,
      env: { ...process.env, TEST_DB: db, TEST_DATABASE_URL: databaseUrl, NODE_OPTIONS: nodeOptions },
      stdio: ["ignore", "inherit", "inherit"],
      detached: true,
    });
    running = child;
    let timedOut = false;
    const watchdog = setTimeout(() => {
      timedOut = true;
      banner([`The ${db} pass did not finish within ${passTimeoutMs / 60_000} minutes: stopping it (FAILED).`]);
      killGroup(child, "SIGKILL");
    }, passTimeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(watchdog);
      running = undefined;
      let result;
      try {
        const json = JSON.parse(fs.readFileSync(report, "utf8"));
        const skipped = [];
        const failures = [];
        for (const suite of json.testResults) {
          for (const test of suite.assertionResults) {
            if (test.status === "pending" || test.status === "skipped") skipped.push(test.fullName);
            if (test.status === "failed") failures.push({ name: `${path.relative(root, suite.name)}: ${test.fullName}`, message: firstLines(test.failureMessages.join("\n")) });
          }
          // A file that failed to load has no failed test, only its own message.
          if (suite.status === "failed" && suite.assertionResults.every((t) => t.status !== "failed")) {
            failures.push({ name: path.relative(root, suite.name), message: firstLines(suite.message) });
          }
        }
        if (timedOut) throw new Error("timed out");
        result = {
          db,
          exitCode: code ?? 1,
          passed: json.numPassedTests,
          // A file that fails to load has no failed test: count it as one failure.
          failed: json.numFailedTests + json.numRuntimeErrorTestSuites,
          skipped: json.numPendingTests + json.numTodoTests,
          skippedNames: skipped,
          failures,
        };
      } catch {
        result = { db, exitCode: 1, passed: 0, failed: 1, skipped: 0, skippedNames: [], failures: [], crashed: timedOut ? "timed out" : (signal ?? code) };
      }
      fs.rmSync(path.dirname(report), { recursive: true, force: true });
      resolve(result);
    });
  });
}

/** The head of a failure message: the assertion and the project's own frames, without colour codes. */
function firstLines(text, count = 16) {
  return (text ?? "")
    // eslint-disable-next-line no-control-regex
    .replace(/\u001b\[[0-9;]*m/g, "")
    .split("\n")
    .filter((line) => !/node_modules\/|node:internal|<anonymous>/.test(line))
    .slice(0, count)
    .map((line) => `    ${line}`)
    .join("\n");
}

const passes = [];
passes.push(await runJest("pglite"));

const reachable = await postgresReachable();
if (reachable.ok) {
  passes.push(await runJest("postgres"));
} else if (requirePostgres) {
  banner([
    `PostgreSQL is NOT reachable at ${databaseUrl}`,
    `(${reachable.reason})`,
    "REQUIRE_POSTGRES=1: the PostgreSQL pass counts as FAILED.",
  ]);
  passes.push({ db: "postgres", exitCode: 1, passed: 0, failed: 1, skipped: 0, skippedNames: [], failures: [], unreachable: true });
} else {
  banner([
    `WARNING: PostgreSQL is NOT reachable at ${databaseUrl}`,
    `(${reachable.reason})`,
    "The PostgreSQL pass was SKIPPED: only PGlite was tested.",
    "Start PostgreSQL or set TEST_DATABASE_URL; CI sets REQUIRE_POSTGRES=1.",
  ]);
}

process.stderr.write("\n=== Summary ===\n");
for (const p of passes) {
  const state = p.unreachable ? "NOT RUN (PostgreSQL unreachable)" : p.exitCode === 0 ? "ok" : p.crashed !== undefined ? `CRASHED (${p.crashed})` : "FAILED";
  process.stderr.write(`${p.db.padEnd(9)} ${state}: ${p.passed} passed, ${p.failed} failed, ${p.skipped} skipped\n`);
  for (const name of p.skippedNames) process.stderr.write(`  skipped on ${p.db}: ${name}\n`);
}
// Failures last, so the tail of a CI log names them.
for (const p of passes) {
  for (const f of p.failures) process.stderr.write(`\nFAILED on ${p.db}: ${f.name}\n${f.message}\n`);
}
if (!reachable.ok && !requirePostgres) process.stderr.write("postgres  SKIPPED: PostgreSQL unreachable (see the warning above)\n");

const total = (key) => passes.reduce((sum, p) => sum + p[key], 0);
process.stdout.write(`${total("passed")} passed, ${total("failed")} failed, ${total("skipped")} skipped\n`);
process.exit(passes.every((p) => p.exitCode === 0) ? 0 : 1);
