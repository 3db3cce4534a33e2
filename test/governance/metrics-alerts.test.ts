import { Code } from "@connectrpc/connect";
import fs from "node:fs";
import path from "node:path";
import yaml from "js-yaml";
import { REPO_ROOT } from "../helpers/env";
import { expectRpcError } from "../helpers/expect-error";
import { createModel, modelInput, sleep, useTestServer } from "../helpers/harness";

const server = useTestServer({ env: { METRICS_FLUSH_INTERVAL_MS: "200", STORAGE_QUOTA_BYTES: "1000000" } });

/** Parses the Prometheus text format into "name{labels}" -> value. */
async function scrape(): Promise<Map<string, number>> {
  const response = await server().fetch("/metrics");
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain/);
  const values = new Map<string, number>();
  for (const line of response.text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

const value = (m: Map<string, number>, key: string) => m.get(key) ?? 0;

test("/metrics reports RPCs by method and code, creations, quality, storage and errors after known calls", async () => {
  const before = await scrape();
  const alice = await server().actor();
  for (let i = 0; i < 3; i++) await alice.grpc.createVoiceModel(modelInput({ provider: "openai-tts", qualityScore: 0.95, sizeBytes: 1000n }));
  await alice.connect.createVoiceModel(modelInput({ provider: "openai-tts", qualityScore: 0.15, sizeBytes: 500n }));
  await server().call("grpc", "getVoiceModel", { modelId: "00000000-0000-4000-8000-000000000000" }, alice.token);
  await server().call("connect", "whoAmI", {});
  const after = await scrape();

  const diff = (key: string) => value(after, key) - value(before, key);
  expect(diff('voice_model_rpc_requests_total{method="createVoiceModel",code="OK"}')).toBe(4);
  expect(diff('voice_model_rpc_requests_total{method="getVoiceModel",code="NOT_FOUND"}')).toBe(1);
  expect(diff('voice_model_rpc_errors_total{method="getVoiceModel",code="NOT_FOUND"}')).toBe(1);
  expect(diff('voice_model_rpc_requests_total{method="whoAmI",code="UNAUTHENTICATED"}')).toBe(1);
  expect(diff('voice_model_rpc_duration_seconds_count{method="createVoiceModel",code="OK"}')).toBe(4);
  expect(diff('voice_model_models_created_total{provider="openai-tts"}')).toBe(4);
  expect(diff("voice_model_quality_score_count")).toBe(4);
  expect(diff('voice_model_quality_score_bucket{le="0.2"}')).toBe(1);
  expect(diff('voice_model_storage_bytes{provider="openai-tts",state="live"}')).toBe(3500);
  expect(diff('voice_model_storage_used_bytes{kind="declared"}')).toBe(3500);
  expect(after.has('voice_model_storage_used_bytes{kind="backups"}')).toBe(true);
  expect(after.has("voice_model_usage_events")).toBe(true);
  expect(after.has('voice_model_cache_hits_total{cache="in_process"}')).toBe(true);
  expect(after.has('voice_model_cache_misses_total{cache="cache_voice_models"}')).toBe(true);
  expect(after.has("voice_model_in_process_cache_models")).toBe(true);
  expect(after.has("voice_model_in_process_cache_users")).toBe(true);
  expect(value(after, "voice_model_storage_quota_bytes")).toBe(1_000_000);
  // The standard series of a Node exporter.
  expect(value(after, "process_resident_memory_bytes")).toBeGreaterThan(0);
  expect(after.has("process_cpu_seconds_total")).toBe(true);
  expect(after.has("nodejs_heap_size_used_bytes")).toBe(true);
  expect(after.has("nodejs_eventloop_lag_seconds")).toBe(true);
  expect(after.has("voice_model_cleanup_eligible_models")).toBe(true);
});

test("GetAlerts evaluates the rules over the fleet's figures; admin only", async () => {
  const admin = await server().adminActor();
  const alice = await server().actor();
  expectRpcError(await server().call("grpc", "getAlerts", {}, alice.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
  const knex = server().db.knex;

  const alerts = async () => Object.fromEntries((await admin.grpc.getAlerts({})).message.alerts.map((a) => [a.name, a]));
  // Storage counts every stored byte, deleted models included: 900,000 of a 1,000,000 quota.
  const big = await createModel(alice, { sizeBytes: 899_000n - 3500n, qualityScore: 0.9 });
  await alice.grpc.deleteVoiceModel({ modelId: big.id });
  await createModel(alice, { sizeBytes: 1000n, qualityScore: 0.9 });
  let state = await alerts();
  expect(state.VoiceModelStorageHigh).toMatchObject({ firing: true, threshold: 0.8 });
  expect(state.VoiceModelStorageHigh.value).toBeCloseTo(0.9, 3);

  // Live completed models average (0.95*3 + 0.15 + 0.9) / 5 = 0.78: not firing; add low ones.
  expect(state.VoiceModelAverageQualityLow.firing).toBe(false);
  for (let i = 0; i < 4; i++) await createModel(alice, { qualityScore: 0.1 });
  state = await alerts();
  expect(state.VoiceModelAverageQualityLow.firing).toBe(true);
  expect(state.VoiceModelAverageQualityLow.value).toBeCloseTo((0.95 * 3 + 0.15 + 0.9 + 0.4) / 9, 3);

  // Every instance flushes its counters to metric_samples; the alert reads the fleet's sum.
  const flushedCalls = async () =>
    Number((await knex.raw(`SELECT coalesce(sum(value), 0)::float8 AS n FROM metric_samples WHERE name = 'rpc_calls'`)).rows[0].n);
  for (const until = Date.now() + 10_000; (await flushedCalls()) < 10 && Date.now() < until; ) await sleep(50);
  expect(await flushedCalls()).toBeGreaterThanOrEqual(10);
  expect(state.VoiceModelHighErrorRate.firing).toBe(false);
  // Another instance's server errors, as it would have flushed them.
  await knex.raw(`INSERT INTO metric_samples (bucket, name, value) VALUES (date_trunc('minute', now()), 'rpc_server_errors', 1000)
                  ON CONFLICT (bucket, name, labels) DO UPDATE SET value = metric_samples.value + 1000`);
  await knex.raw(`INSERT INTO metric_samples (bucket, name, value) VALUES (date_trunc('minute', now()), 'rpc_calls', 1000)
                  ON CONFLICT (bucket, name, labels) DO UPDATE SET value = metric_samples.value + 1000`);
  state = await alerts();
  expect(state.VoiceModelHighErrorRate.firing).toBe(true);

  expect(state.VoiceModelCleanupFailing.firing).toBe(false);
  await knex("cleanup_runs").insert({ trigger: "scheduled", holder: "other", status: "failed", eligible: 20_000, error: "boom", finished_at: knex.raw("now()") });
  state = await alerts();
  expect(state.VoiceModelCleanupFailing.firing).toBe(true);
  expect(state.VoiceModelCleanupBacklog).toMatchObject({ firing: true, value: 20_000 });
});

test("the alerting rules file is valid and every rule's metrics exist", async () => {
  const file = path.join(REPO_ROOT, "ops/prometheus/alerts.yml");
  const doc = yaml.load(fs.readFileSync(file, "utf8")) as { groups: Array<{ name: string; rules: Array<Record<string, any>> }> };
  // Every metric the service declares, observed yet or not (its # TYPE line).
  const text = (await server().fetch("/metrics")).text;
  const exposed = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
  expect(text).toMatch(/^# TYPE voice_model_cache_hits_total counter$/m);
  const names = new Set<string>();
  expect(doc.groups.length).toBeGreaterThan(0);
  for (const group of doc.groups) {
    expect(typeof group.name).toBe("string");
    for (const rule of group.rules) {
      expect(Object.keys(rule).every((k) => ["alert", "expr", "for", "labels", "annotations"].includes(k))).toBe(true);
      expect(rule.alert).toMatch(/^[A-Za-z_][A-Za-z0-9_]*$/);
      expect(typeof rule.expr).toBe("string");
      if (rule.for !== undefined) expect(rule.for).toMatch(/^\d+[smhd]$/);
      expect(["warning", "critical"]).toContain(rule.labels.severity);
      expect(rule.annotations.summary).toBeTruthy();
      names.add(rule.alert);
      const metrics = (rule.expr as string).match(/voice_model_[a-z_]+/g) ?? [];
      expect(metrics.length).toBeGreaterThan(0);
      for (const metric of metrics) expect([rule.alert, exposed.has(metric) ? metric : `missing ${metric}`]).toEqual([rule.alert, metric]);
    }
  }
  // The same rules GetAlerts evaluates.
  const admin = await server().adminActor();
  const served = (await admin.grpc.getAlerts({})).message.alerts.map((a) => a.name);
  expect([...names].sort()).toEqual([...served].sort());
});
