// `npm start` builds the web console only when it is missing or stale (bin/run.js calls
// ensureFresh before the server starts); when fresh that costs a few stat calls.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "./helpers/env";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const consoleBuild = require(path.join(REPO_ROOT, "console", "build.js")) as { ensureFresh(): boolean; isFresh(): boolean; outDir: string };
const stamp = path.join(consoleBuild.outDir, ".built");

test("bin/run.js builds the console before the server, in a development checkout", () => {
  expect(fs.readFileSync(path.join(REPO_ROOT, "bin", "run.js"), "utf8")).toMatch(/entry === "main"\) require\(path\.join\(root, "console", "build\.js"\)\)\.ensureFresh\(\)/);
});

test("a stale build is rebuilt; a fresh one is left alone and costs well under 300 ms", () => {
  consoleBuild.ensureFresh();
  // An input newer than the build makes it stale (a stamp older than any checkout's files).
  const old = new Date("2000-01-01T00:00:00Z");
  fs.utimesSync(stamp, old, old);
  expect(consoleBuild.isFresh()).toBe(false);
  expect(consoleBuild.ensureFresh()).toBe(true);
  expect(consoleBuild.isFresh()).toBe(true);
  for (const file of ["index.html", "app.js", "console.css"]) expect(fs.statSync(path.join(consoleBuild.outDir, file)).size).toBeGreaterThan(0);

  // What `npm start` adds when fresh: loading the builder and checking, in a new process.
  const script = "const t = process.hrtime.bigint(); const built = require('./console/build.js').ensureFresh(); process.stdout.write(JSON.stringify({ built, ms: Number(process.hrtime.bigint() - t) / 1e6 }))";
  const runs = [0, 1, 2].map(() => JSON.parse(execFileSync(process.execPath, ["-e", script], { cwd: REPO_ROOT, encoding: "utf8" })) as { built: boolean; ms: number });
  expect(runs.every((r) => !r.built)).toBe(true);
  expect(Math.min(...runs.map((r) => r.ms))).toBeLessThan(300);
});
