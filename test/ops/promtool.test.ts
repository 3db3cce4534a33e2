import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { REPO_ROOT } from "../helpers/env";
import { useTestServer } from "../helpers/harness";

// promtool comes with Debian's `prometheus` package (.ci/run installs it). CI must run these checks;
// elsewhere a missing promtool skips them, loudly.
const promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find((p) => fs.existsSync(p));
if (!promtool && process.env.CI === "true") throw new Error("promtool is missing (apt-get install prometheus) and CI=true requires it");
if (!promtool) console.warn("!!! promtool not found: the Prometheus rule and metrics checks are SKIPPED (apt-get install prometheus)");
const maybe = promtool ? describe : describe.skip;

const rules = path.join(REPO_ROOT, "ops/prometheus/alerts.yml");
const testsDir = path.join(REPO_ROOT, "ops/prometheus/tests");

/** Runs promtool without blocking the event loop (the server under test runs in this process). */
function run(args: string[], stdin?: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(promtool!, args, { cwd: REPO_ROOT, stdio: ["pipe", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, output }));
    child.stdin.end(stdin ?? "");
  });
}

maybe("promtool", () => {
  const server = useTestServer({ env: { STORAGE_QUOTA_BYTES: "1000000" } });

  test("check rules accepts the alerting rules", async () => {
    const result = await run(["check", "rules", rules]);
    expect([result.code, result.output]).toEqual([0, expect.stringContaining("SUCCESS")]);
  });

  test("every alert has unit tests that see it fire and stay silent", async () => {
    const files = fs.readdirSync(testsDir).filter((f) => f.endsWith(".yml")).map((f) => path.join(testsDir, f));
    expect(files.length).toBeGreaterThan(0);
    const result = await run(["test", "rules", ...files]);
    expect([result.code, result.output]).toEqual([0, expect.stringContaining("SUCCESS")]);
    // Each alert of the rules file appears in some test, once with an expected alert and once with none.
    const alerts = [...fs.readFileSync(rules, "utf8").matchAll(/^\s*- alert: (\S+)/gm)].map((m) => m[1]);
    const tested = files.map((f) => fs.readFileSync(f, "utf8")).join("\n");
    for (const alert of alerts) {
      const blocks = tested.split(/(?=^\s*- eval_time:)/m).filter((b) => new RegExp(`alertname: ${alert}\\s`).test(b));
      expect([alert, blocks.some((b) => /exp_alerts:\s*\[\]/.test(b))]).toEqual([alert, true]);
      expect([alert, blocks.some((b) => /exp_labels:/.test(b))]).toEqual([alert, true]);
    }
  });

  test("check metrics finds no problem in a scrape of the running server", async () => {
    const alice = await server().actor();
    await alice.grpc.whoAmI({});
    const scrape = await server().fetch("/metrics");
    expect(scrape.status).toBe(200);
    expect(scrape.text).toMatch(/^process_resident_memory_bytes /m);
    const result = await run(["check", "metrics"], scrape.text);
    // prom-client's standard nodejs_active_*_total are gauges, a naming every Node dashboard expects;
    // promtool's linter flags exactly those. Anything else it reports fails the test.
    const known = /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;
    const problems = result.output.split("\n").filter((line) => line && !known.test(line));
    expect(problems).toEqual([]);
    expect([0, 3]).toContain(result.code);
  });
});
