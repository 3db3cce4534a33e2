/**
 * npm run bench: the throughput benchmarks.
 *
 * Creates and seeds a PostgreSQL database (100,000 models of 10,000 users), starts our service
 * (compiled, as the Dockerfile runs it: dist/src/main.js) and two bare @grpc/grpc-js baselines
 * as separate processes, drives each with
 * h2load (gRPC, 50 streams; Connect JSON over HTTP/1.1, 50 connections) in its own processes,
 * checks every case with a real client before and after each run, prints medians and ratios,
 * writes .bench/results.json, and stops everything it started and drops the database.
 *
 * Env: BENCH_SECONDS (10) per run, BENCH_RUNS (3), BENCH_WARMUP_SECONDS (2), BENCH_PG_URL
 * (postgres://postgres@127.0.0.1:5432/postgres), BENCH_DB (vm_bench), BENCH_KEEP_DB=1 keeps the
 * database, BENCH_ONLY=a,b,... runs some cases (footprint: idle RSS and start time of `npm start`, bench/footprint.ts,
 * later idle sample BENCH_IDLE_SECONDS, 30; scale: the 1M and 10M cases of bench/scale.ts, also run after the rest with
 * BENCH_SCALE=1; events: change-event delivery, bench/events-bench.ts, BENCH_EVENTS_RATE
 * writes/s, 50; x: the 1 GiB export, BENCH_EXPORT_MB; users: the many-users
 * cases of bench/many-users.ts, its own database of 100,000 users: users-reads, users-mixed for a part), BENCH_HTTP_TOOL=h2load|autocannon for (e)
 * (h2load by default: the same instrument as its baseline's; autocannon's own event loop adds to the tail it reports),
 * BENCH_H2_CLIENTS (5; streams per client = 50 / clients), BENCH_PROFILE=1 runs our service with
 * --cpu-prof (profiles in .bench/profile; summarize with bench/profile-summary.ts).
 * On a shared machine: before each run the bench waits (up to BENCH_QUIET_WAIT s, 20) for other
 * work to calm down, and repeats a run (BENCH_RETRIES times, 1) when other processes took more
 * than 10% of the machine during it; the table shows the server's CPU per request too.
 */
import { fromBinary, toBinary, create, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  GetActiveVoiceModelRequestSchema,
  GetActiveVoiceModelResponseSchema,
  ListVoiceModelsRequestSchema,
  ListVoiceModelsResponseSchema,
  VoiceModelService,
  WhoAmIRequestSchema,
  WhoAmIResponseSchema,
} from "../gen/voicemodel/v1/voice_model_service_pb";
import { BASELINE_PATH } from "./baseline-server";
import { grpcCall, hs256Token } from "./client";
import { autocannon, grpcFrame, h2load, median, type LoadResult } from "./load";
import { cpuSnapshot, cpuUse, type CpuUse } from "./cpu";
import { baselineArgs, connectBaselineArgs, freePort, Processes, serviceArgs, waitUntilReady, type Child, type OwnDatabaseCase } from "./processes";
import { createBenchDatabase, dropBenchDatabase, expectedFor, migrateAndSeed, SEED, userName } from "./seed";
import { runUsageBench } from "./usage-cases";
import { printExportBench, runExportBench } from "./export-bench";
import { seedUsage } from "./usage-seed";
import { runManyUsersBench } from "./many-users";
import { footprintPassed, printFootprint, runFootprintBench, type FootprintResult } from "./footprint";
import { runEventsBench } from "./events-bench";
import { runScaleBench } from "./scale";

const ROOT = path.resolve(__dirname, "..");
const OUT = path.join(ROOT, ".bench");
// Every service the bench starts on one database must hash erased users with the same key (each
// has its own data folder, whose key file would differ): one for the whole run.
process.env.ERASURE_KEY ??= randomBytes(32).toString("base64");

function envInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (!raw) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

const settings = {
  seconds: envInt("BENCH_SECONDS", 10),
  runs: envInt("BENCH_RUNS", 3),
  warmupSeconds: process.env.BENCH_WARMUP_SECONDS === "0" ? 0 : envInt("BENCH_WARMUP_SECONDS", 2),
  adminUrl: process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
  dbName: process.env.BENCH_DB ?? "vm_bench",
  keepDb: process.env.BENCH_KEEP_DB === "1",
  only: process.env.BENCH_ONLY ? process.env.BENCH_ONLY.split(",").map((s) => s.trim()) : undefined,
  /** The 1M and 10M cases too (bench/scale.ts: long, and about 10 GB of disk). */
  scale: process.env.BENCH_SCALE === "1",
  httpTool: (process.env.BENCH_HTTP_TOOL ?? "h2load") as "autocannon" | "h2load",
  concurrency: 50,
  h2Clients: envInt("BENCH_H2_CLIENTS", 5),
  profile: process.env.BENCH_PROFILE === "1",
  /** Repeats of a run that other processes disturbed; 0 keeps every run as measured. */
  retries: process.env.BENCH_RETRIES === "0" ? 0 : envInt("BENCH_RETRIES", 1),
  /** Longest wait (s) for other processes to quiet down before a run. */
  quietWaitSeconds: process.env.BENCH_QUIET_WAIT === "0" ? 0 : envInt("BENCH_QUIET_WAIT", 20),
};

/** One fixed caller and user for every request (h2load sends one body file). */
const BENCH_USER = userName(42); // one of the users with 30 models
const SERVICE_SUBJECT = "bench-tts-service";

// ---------------------------------------------------------------------------------------------
// Tools

function checkTools(): void {
  const h2 = spawnSync("h2load", ["--version"], { encoding: "utf8" });
  if (h2.error || h2.status !== 0) {
    // We do not install system packages from a bench script; say exactly what to run.
    console.error(
      "bench: h2load (Debian package nghttp2-client) is not installed. Install it with:\n" +
        "  sudo apt-get update && sudo apt-get install -y nghttp2-client",
    );
    process.exit(2);
  }
  try {
    require.resolve("autocannon/package.json");
  } catch {
    console.error("bench: autocannon is missing (a devDependency). Run: npm ci");
    process.exit(2);
  }
}

// ---------------------------------------------------------------------------------------------
// Tokens and clients

function expect(condition: boolean, what: string): void {
  if (!condition) throw new Error(`check failed: ${what}`);
}

// ---------------------------------------------------------------------------------------------
// Cases

type Key = "a" | "b" | "c" | "d" | "e" | "f" | "j";

interface Case {
  key: Key;
  title: string;
  /** Calls once with a real client and checks the answer; returns the reply's DATA size (gRPC). */
  check(): Promise<number | undefined>;
  /** The process serving this case (for CPU accounting). */
  server: Child;
  load(seconds: number, replyFrameBytes?: number): Promise<LoadResult>;
}

interface Endpoint {
  port: number;
  /** The server process listening there. */
  child: Child;
}

interface Targets {
  grpc: Endpoint;
  http: Endpoint;
  noop: Endpoint;
  select: Endpoint;
  /** The bare connect-node no-op (bench/connect-baseline.ts). */
  connectNoop: Endpoint;
  token: string;
  activeId: string;
  liveModels: number;
}

function buildCases(procs: Processes, t: Targets, workDir: string): Case[] {
  const clients = settings.h2Clients;
  const streamsPerClient = Math.ceil(settings.concurrency / clients);
  const auth = { authorization: `Bearer ${t.token}` };
  const grpcHeaders = { "content-type": "application/grpc", te: "trailers", ...auth };

  const grpcCase = (
    key: Key,
    title: string,
    { port, child: server }: Endpoint,
    method: string,
    request: Uint8Array,
    verify: (reply: Buffer) => void,
  ): Case => {
    const bodyFile = path.join(workDir, `body-${key}.bin`);
    writeFileSync(bodyFile, grpcFrame(request));
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    return {
      key,
      title,
      async check() {
        const reply = await grpcCall(client, method, request, t.token);
        verify(reply);
        return 5 + reply.length;
      },
      server,
      load: (seconds, replyFrameBytes) =>
        h2load(procs, {
          url: `http://127.0.0.1:${port}${method}`,
          bodyFile,
          headers: grpcHeaders,
          seconds,
          clients,
          streamsPerClient,
          replyFrameBytes,
          workDir,
        }),
    };
  };
  const encode = <D extends DescMessage>(schema: D, value: MessageInitShape<D>) => toBinary(schema, create(schema, value));
  const rpc = (name: string) => `/${VoiceModelService.typeName}/${name}`;

  const whoAmI = grpcCase("b", "WhoAmI, our full stack, gRPC", t.grpc, rpc("WhoAmI"), encode(WhoAmIRequestSchema, {}), (reply) => {
    const r = fromBinary(WhoAmIResponseSchema, reply);
    expect(r.userId === SERVICE_SUBJECT && r.roles.join() === "service", `WhoAmI answered ${JSON.stringify(r)}`);
  });
  const getActive = grpcCase(
    "c",
    "GetActiveVoiceModel, gRPC",
    t.grpc,
    rpc("GetActiveVoiceModel"),
    encode(GetActiveVoiceModelRequestSchema, { userId: BENCH_USER }),
    (reply) => {
      const m = fromBinary(GetActiveVoiceModelResponseSchema, reply).model;
      expect(m?.id === t.activeId && m.isActive && m.userId === BENCH_USER, `GetActiveVoiceModel answered model ${m?.id}`);
    },
  );
  const list = grpcCase(
    "d",
    "ListVoiceModels limit 20, gRPC",
    t.grpc,
    rpc("ListVoiceModels"),
    encode(ListVoiceModelsRequestSchema, { userId: BENCH_USER, limit: 20 }),
    (reply) => {
      const r = fromBinary(ListVoiceModelsResponseSchema, reply);
      expect(
        r.models.length === 20 && r.total === t.liveModels && r.models[0].id === t.activeId && r.nextPageToken !== "",
        `ListVoiceModels answered ${r.models.length} models, total ${r.total}, first ${r.models[0]?.id} ` +
          `(active ${r.models[0]?.isActive}, score ${r.models[0]?.qualityScore}); expected ${t.liveModels} live, first ${t.activeId}`,
      );
    },
  );
  const noop = grpcCase("a", "bare grpc-js no-op", t.noop, BASELINE_PATH, new Uint8Array(0), (reply) =>
    expect(reply.length === 0, "no-op baseline replied bytes"),
  );
  const select = grpcCase("f", "bare grpc-js + pg primary-key SELECT", t.select, BASELINE_PATH, Buffer.from(t.activeId), (reply) =>
    expect(reply.toString() === t.activeId, `select baseline answered ${reply.toString()}`),
  );

  const connectUrl = `http://127.0.0.1:${t.http.port}${rpc("GetActiveVoiceModel")}`;
  const connectBody = JSON.stringify({ userId: BENCH_USER });
  const jsonHeaders = { "content-type": "application/json", ...auth };
  const connectBodyFile = path.join(workDir, "body-e.json");
  writeFileSync(connectBodyFile, connectBody);
  /** Connect JSON load on one URL: the same request, headers and generator for (e) and (j). */
  const connectLoad = (url: string) => (seconds: number) =>
    settings.httpTool === "h2load"
      ? h2load(procs, { url, bodyFile: connectBodyFile, headers: jsonHeaders, seconds, clients: settings.concurrency, streamsPerClient: 1, http1: true, workDir })
      : autocannon(procs, { url, body: connectBody, headers: jsonHeaders, seconds, connections: settings.concurrency });
  const connectJson: Case = {
    key: "e",
    title: `GetActiveVoiceModel, Connect JSON (${settings.httpTool})`,
    async check() {
      const res = await fetch(connectUrl, { method: "POST", headers: jsonHeaders, body: connectBody });
      const body = (await res.json()) as { model?: { id?: string; isActive?: boolean } };
      expect(res.status === 200 && body.model?.id === t.activeId && body.model.isActive === true, `Connect JSON: HTTP ${res.status} ${JSON.stringify(body)}`);
      return undefined;
    },
    server: t.http.child,
    load: connectLoad(connectUrl),
  };

  // The same request and generator against connect-node's own adapter answering {} at once.
  const connectNoopUrl = `http://127.0.0.1:${t.connectNoop.port}${rpc("GetActiveVoiceModel")}`;
  const connectNoop: Case = {
    key: "j",
    title: `bare connect-node JSON no-op (${settings.httpTool})`,
    async check() {
      const res = await fetch(connectNoopUrl, { method: "POST", headers: jsonHeaders, body: connectBody });
      const body = await res.text();
      expect(res.status === 200 && body === "{}", `connect-node no-op: HTTP ${res.status} ${body}`);
      return undefined;
    },
    server: t.connectNoop.child,
    load: connectLoad(connectNoopUrl),
  };

  // Interleaved within each round, so drift over the minutes hits baselines and ours alike; each
  // of ours runs next to, or one case away from, the baselines it is compared with ((d), with
  // the widest margin, is the one a case away from (f)).
  const all = [noop, whoAmI, getActive, select, connectJson, connectNoop, list];
  return settings.only ? all.filter((c) => settings.only!.includes(c.key)) : all;
}

// ---------------------------------------------------------------------------------------------
// Report

/** stretch: reported with its own PASS/MISS, not a gate. */
const RPS_TARGETS: Array<{ ours: Key; base: Key; min: number; stretch?: boolean }> = [
  { ours: "b", base: "a", min: 0.8 },
  { ours: "c", base: "f", min: 0.8 },
  { ours: "d", base: "f", min: 0.5 },
  // GetActiveVoiceModel with the in-process cache in front, against the no-op.
  { ours: "c", base: "a", min: 0.8 },
  // Our Connect JSON path with the service's work against connect-node doing none.
  { ours: "e", base: "j", min: 1.0 },
  { ours: "b", base: "a", min: 0.9, stretch: true },
  { ours: "c", base: "a", min: 0.9, stretch: true },
];
const P99_TARGETS: Array<{ ours: Key; base: Key; max: number; note?: string }> = [
  { ours: "b", base: "a", max: 1.5 },
  { ours: "c", base: "f", max: 1.5 },
  { ours: "d", base: "f", max: 1.5 },
  { ours: "e", base: "j", max: 1.5, note: "both Connect JSON" },
  { ours: "c", base: "a", max: 1.5, note: "cached" },
];

type Run = LoadResult & { cpu?: CpuUse; round: number };

/**
 * The median over rounds of ours/base within each round. The cases of a round run back to back,
 * so this pairs runs that saw the same machine: on these VMs speed drifts 2-3x over minutes,
 * which a ratio of medians taken from different minutes would carry into the result.
 */
function pairedRatio(ours: Summary, base: Summary, figure: (r: Run) => number): number {
  const ratios = ours.runs.flatMap((o) => {
    const b = base.runs.find((r) => r.round === o.round);
    return b ? [figure(o) / figure(b)] : [];
  });
  return ratios.length ? median(ratios) : NaN;
}

/** A run is "disturbed" when other work took more than this share of the machine. */
const DISTURBED = 0.1;

interface Summary {
  key: Key;
  title: string;
  runs: Run[];
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Median CPU ms the server process spent per 1,000 requests. */
  serverMsPer1k: number;
  /** The largest share of the machine other work took during a run. */
  otherShareMax: number;
  ok: number;
  failed: number;
  checksPassed: boolean;
}

function report(summaries: Map<Key, Summary>) {
  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  const rows = [["case", "what", "req/s", "p50 ms", "p99 ms", "srv CPU ms/1k req", "other CPU", "ok", "failed", "checks"]];
  for (const s of summaries.values()) {
    const bodies = s.runs.every((r) => r.bodiesMatch !== false);
    rows.push([
      `(${s.key})`,
      s.title,
      f(s.rps),
      f(s.p50Ms, 2),
      f(s.p99Ms, 2),
      f(s.serverMsPer1k, 1),
      Number.isFinite(s.otherShareMax) ? `${f(s.otherShareMax * 100)}%` : "-",
      String(s.ok),
      String(s.failed),
      s.checksPassed && bodies ? "ok" : "FAILED",
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log("");
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, c) => (c >= 2 && c <= 8 ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }

  const ratios: Array<Record<string, unknown>> = [];
  console.log("\nratios: median of the per-round ratios (ratio of the medians in brackets)");
  console.log("                                         measured   target   result   by server CPU/req");
  for (const t of RPS_TARGETS) {
    const a = summaries.get(t.ours);
    const b = summaries.get(t.base);
    if (!a || !b) continue;
    const value = pairedRatio(a, b, (r) => r.rps);
    const ofMedians = a.rps / b.rps;
    const pass = value >= t.min;
    // What the ratio would be if both were limited by the server's CPU alone.
    const byCpu = b.serverMsPer1k / a.serverMsPer1k;
    ratios.push({ kind: "rps", ours: t.ours, baseline: t.base, value, ofMedians, target: `>= ${t.min}`, pass, byServerCpu: byCpu, stretch: t.stretch });
    console.log(
      `  req/s (${t.ours})/(${t.base})${t.stretch ? " [stretch]" : ""}`.padEnd(40) +
        `${f(value, 2).padStart(8)}   >= ${t.min.toFixed(1)}   ${pass ? "PASS" : "MISS"}     ${f(byCpu, 2).padEnd(6)} (${f(ofMedians, 2)})`,
    );
  }
  for (const t of P99_TARGETS) {
    const a = summaries.get(t.ours);
    const b = summaries.get(t.base);
    if (!a || !b) continue;
    const value = pairedRatio(a, b, (r) => r.p99Ms);
    const ofMedians = a.p99Ms / b.p99Ms;
    const pass = value <= t.max;
    ratios.push({ kind: "p99", ours: t.ours, baseline: t.base, value, ofMedians, target: `<= ${t.max}`, pass, note: t.note });
    const label = `  p99 (${t.ours}) vs (${t.base})${t.note ? ` [${t.note}]` : ""}`;
    console.log(label.padEnd(40) + `${f(value, 2).padStart(8)}x  <= ${t.max.toFixed(1)}x  ${pass ? "PASS" : "MISS"}            (${f(ofMedians, 2)}x)`);
  }
  const disturbed = [...summaries.values()].filter((s) => s.otherShareMax > DISTURBED).map((s) => `(${s.key})`);
  if (disturbed.length) {
    console.warn(
      `\nbench: WARNING: other processes used more than ${DISTURBED * 100}% of the machine during runs of ${disturbed.join(" ")}; ` +
        "req/s and latencies of those runs are low; the server CPU per request is the steadier figure",
    );
  }
  return ratios;
}

// ---------------------------------------------------------------------------------------------
// Main

/** Waits (up to BENCH_QUIET_WAIT s) until the machine is less than 10% busy; our servers idle meanwhile. */
async function waitForQuietMachine(): Promise<void> {
  const deadline = Date.now() + settings.quietWaitSeconds * 1000;
  let said = false;
  for (;;) {
    const busy = await cpuBusy(500);
    if (busy < DISTURBED || Date.now() > deadline) return;
    if (!said) console.log(`  (machine ${(busy * 100).toFixed(0)}% busy with other work: waiting up to ${settings.quietWaitSeconds} s)`);
    said = true;
    await new Promise((r) => setTimeout(r, 2_000));
  }
}

/** The fraction of all CPUs' time spent busy over the next ms milliseconds. */
async function cpuBusy(ms: number): Promise<number> {
  const sample = () => os.cpus().reduce((acc, c) => {
    const t = c.times;
    return { idle: acc.idle + t.idle, all: acc.all + t.idle + t.user + t.nice + t.sys + t.irq };
  }, { idle: 0, all: 0 });
  const a = sample();
  await new Promise((r) => setTimeout(r, ms));
  const b = sample();
  return 1 - (b.idle - a.idle) / Math.max(1, b.all - a.all);
}

/** The footprint case (bench/footprint.ts): its own servers, data folders and database. */
async function footprint(procs: Processes): Promise<FootprintResult> {
  const result = await runFootprintBench({
    procs,
    root: ROOT,
    adminUrl: settings.adminUrl,
    dbName: `${settings.dbName}_footprint`,
    idleSeconds: envInt("BENCH_IDLE_SECONDS", 30),
  });
  printFootprint(result);
  if (!footprintPassed(result)) console.warn("bench: footprint: some figures missed their targets (see above)");
  return result;
}

/** A fresh JWT secret and a service-role token signed with it (a day long). */
function serviceCredentials(): { secret: string; token: string } {
  const secret = randomBytes(32).toString("hex");
  return { secret, token: hs256Token(secret, { sub: SERVICE_SUBJECT, roles: ["service"], exp: Math.floor(Date.now() / 1000) + 24 * 3600 }) };
}

/** The run's settings for a case with its own services and database (`<BENCH_DB>_<suffix>`). */
function ownDatabase(procs: Processes, workDir: string, suffix: string, credentials = serviceCredentials()): OwnDatabaseCase {
  const { seconds, runs, adminUrl, keepDb } = settings;
  return { procs, root: ROOT, adminUrl, dbName: `${settings.dbName}_${suffix}`, keepDb, ...credentials, seconds, runs, workDir };
}

/** The change-event delivery case (bench/events-bench.ts): its own servers and database. */
function events(procs: Processes, workDir: string): Promise<Record<string, unknown>> {
  return runEventsBench({ ...ownDatabase(procs, workDir, "events"), rate: envInt("BENCH_EVENTS_RATE", 50) });
}

/** The scale cases (bench/scale.ts): 1M and 10M models, each its own database; ~10 GB of disk. */
function scale(procs: Processes, workDir: string): Promise<Record<string, unknown>> {
  return runScaleBench({ ...ownDatabase(procs, workDir, "scale"), warmupSeconds: settings.warmupSeconds });
}

/** Cases that need neither the main data set nor h2load. */
const STANDALONE = ["footprint", "events", "scale"];

async function main(procs: Processes, cleanups: Array<() => Promise<void>>) {
  // This run's own folder for body files and logs: two benches in one tree must not share them.
  mkdirSync(path.join(OUT, "tmp"), { recursive: true });
  const workDir = mkdtempSync(path.join(OUT, "tmp", "run-"));
  cleanups.push(async () => rmSync(workDir, { recursive: true, force: true }));
  if (settings.only?.every((k) => STANDALONE.includes(k))) {
    const result = {
      events: settings.only.includes("events") ? await events(procs, workDir) : undefined,
      footprint: settings.only.includes("footprint") ? await footprint(procs) : undefined,
      scale: settings.only.includes("scale") ? await scale(procs, workDir) : undefined,
    };
    mkdirSync(OUT, { recursive: true });
    const file = path.join(OUT, settings.only.join("-") + ".json");
    writeFileSync(file, JSON.stringify({ date: new Date().toISOString(), node: process.version, ...result }, null, 2));
    console.log(`\nbench: results written to ${path.relative(process.cwd(), file)}`);
    return;
  }
  checkTools();
  console.log(
    `bench: ${settings.runs} runs x ${settings.seconds} s per case (+${settings.warmupSeconds} s warm-up), ` +
      `${settings.concurrency} concurrent streams/connections, ${os.cpus().length} CPUs, node ${process.version}`,
  );
  const busyBefore = await cpuBusy(1_000);
  if (busyBefore > 0.1) {
    console.warn(`bench: WARNING: the CPUs are ${(busyBefore * 100).toFixed(0)}% busy before the bench starts; other work skews the figures`);
  }

  let started = Date.now();
  let dbUrl: string;
  try {
    dbUrl = await createBenchDatabase(settings.adminUrl, settings.dbName);
  } catch (error) {
    throw new Error(`cannot create database ${settings.dbName} via ${settings.adminUrl} (is PostgreSQL running? set BENCH_PG_URL): ${(error as Error).message}`);
  }
  if (!settings.keepDb) cleanups.push(() => dropBenchDatabase(settings.adminUrl, settings.dbName));
  const counts = await migrateAndSeed(dbUrl);
  const expected = await expectedFor(dbUrl, BENCH_USER);
  // The usage cases (g, h, i): a user with 1,000 models and 1,000,000 usage events.
  const usageWanted = !settings.only || settings.only.some((k) => ["g", "h", "i"].includes(k));
  const usageSeed = usageWanted ? await seedUsage(dbUrl) : undefined;
  if (usageSeed) console.log(`bench: usage data set (1,000 models, 1,000,000 events) seeded in ${usageSeed.seconds.toFixed(1)} s`);
  console.log(
    `bench: database ${settings.dbName}: ${counts.models} models of ${counts.owners} users (${counts.active} active) seeded in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
      `every request is for ${BENCH_USER} (${expected.liveModels} live models) with one service-role token`,
  );

  const { secret, token } = serviceCredentials();
  const [grpcPort, httpPort, noopPort, selectPort, connectNoopPort] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()];

  const profileArgs = settings.profile ? ["--cpu-prof", `--cpu-prof-dir=${path.join(OUT, "profile")}`] : [];
  const service = procs.start("service (dist/src/main.js)", process.execPath, [...profileArgs, ...serviceArgs(ROOT)], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(httpPort),
      GRPC_PORT: String(grpcPort),
      DATABASE_URL: dbUrl,
      DATA_DIR: path.join(OUT, "data"),
      JWT_SECRET: secret,
      LOG_LEVEL: "warn",
    },
  });
  const baseline = (mode: string, port: number) =>
    procs.start(`baseline ${mode}`, process.execPath, baselineArgs(ROOT), {
      cwd: ROOT,
      env: { ...process.env, BASELINE_MODE: mode, PORT: String(port), DATABASE_URL: dbUrl },
    });
  const noopServer = baseline("noop", noopPort);
  const selectServer = baseline("select", selectPort);
  const connectNoopServer = procs.start("baseline connect-node", process.execPath, connectBaselineArgs(ROOT), {
    cwd: ROOT,
    env: { ...process.env, PORT: String(connectNoopPort) },
  });

  const targets = {
    grpc: { port: grpcPort, child: service },
    http: { port: httpPort, child: service },
    noop: { port: noopPort, child: noopServer },
    select: { port: selectPort, child: selectServer },
    connectNoop: { port: connectNoopPort, child: connectNoopServer },
  };
  const cases = buildCases(procs, { ...targets, token, activeId: expected.activeId, liveModels: expected.liveModels }, workDir);
  const byKey = (k: Key) => cases.find((c) => c.key === k);
  // The usage cases need the service up even when none of its own cases runs.
  const probe = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  const whoAmI = () => grpcCall(probe, `/${VoiceModelService.typeName}/WhoAmI`, toBinary(WhoAmIRequestSchema, create(WhoAmIRequestSchema, {})), token);
  started = Date.now();
  await Promise.all([
    waitUntilReady(service, () => (byKey("b") ?? byKey("c") ?? byKey("d") ?? byKey("e"))?.check() ?? whoAmI()).finally(() => probe.close()),
    waitUntilReady(noopServer, () => byKey("a")?.check() ?? Promise.resolve()),
    waitUntilReady(selectServer, () => byKey("f")?.check() ?? Promise.resolve()),
    waitUntilReady(connectNoopServer, () => byKey("j")?.check() ?? Promise.resolve()),
  ]);
  console.log(`bench: servers ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);

  const summaries = new Map<Key, Summary>();
  for (const c of cases) summaries.set(c.key, {
      key: c.key,
      title: c.title,
      runs: [],
      rps: NaN,
      p50Ms: NaN,
      p99Ms: NaN,
      serverMsPer1k: NaN,
      otherShareMax: NaN,
      ok: 0,
      failed: 0,
      checksPassed: true,
    });
  for (let round = 1; round <= settings.runs; round++) {
    for (const c of cases) {
      const s = summaries.get(c.key)!;
      let r: Run | undefined;
      for (let attempt = 0; ; attempt++) {
        await waitForQuietMachine();
        let frameBytes: number | undefined;
        try {
          frameBytes = await c.check();
        } catch (error) {
          // A wrong answer before the run: no load on a broken case; the summary says FAILED.
          s.checksPassed = false;
          console.error(`  round ${round} (${c.key}) check before the run: ${(error as Error).message}; run skipped`);
          break;
        }
        if (settings.warmupSeconds > 0) await c.load(settings.warmupSeconds);
        const before = cpuSnapshot(c.server.proc.pid, settings.dbName);
        r = { ...(await c.load(settings.seconds, frameBytes)), round };
        r.cpu = cpuUse(before, cpuSnapshot(c.server.proc.pid, settings.dbName), r.ok + r.failed);
        if (!r.cpu || r.cpu.otherShare <= DISTURBED || attempt >= settings.retries) break;
        console.log(`  round ${round} (${c.key}) disturbed: other processes took ${(r.cpu.otherShare * 100).toFixed(0)}% of the machine; repeating`);
      }
      if (!r) continue;
      try {
        await c.check();
      } catch (error) {
        s.checksPassed = false;
        console.error(`  round ${round} (${c.key}) check after the run: ${(error as Error).message}`);
      }
      s.runs.push(r);
      console.log(
        `  round ${round} (${c.key}) ${c.title.padEnd(42)} ${r.rps.toFixed(0).padStart(7)} req/s  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms` +
          (r.cpu ? `  server ${r.cpu.serverMsPer1k.toFixed(1)} CPU ms/1k req  other ${(r.cpu.otherShare * 100).toFixed(0)}%` : "") +
          `  ok ${r.ok} failed ${r.failed}${r.bodiesMatch === false ? `  REPLY BYTES MISMATCH: ${r.note}` : ""}`,
      );
    }
  }
  for (const s of summaries.values()) {
    s.rps = median(s.runs.map((r) => r.rps));
    s.p50Ms = median(s.runs.map((r) => r.p50Ms));
    s.p99Ms = median(s.runs.map((r) => r.p99Ms));
    s.serverMsPer1k = median(s.runs.map((r) => r.cpu?.serverMsPer1k ?? NaN));
    s.otherShareMax = Math.max(...s.runs.map((r) => r.cpu?.otherShare ?? NaN));
    s.ok = s.runs.reduce((n, r) => n + r.ok, 0);
    s.failed = s.runs.reduce((n, r) => n + r.failed, 0);
  }
  const ratios = report(summaries);
  const usage = usageSeed
    ? await runUsageBench({
        procs,
        grpcPort,
        token,
        dbUrl,
        seed: usageSeed,
        noop: summaries.get("a"),
        seconds: settings.seconds,
        runs: settings.runs,
        workDir,
        root: ROOT,
      })
    : undefined;
  // Many users, reads: a user drawn per call (its own service processes and database).
  const part = (name: string) => !settings.only || settings.only.includes("users") || settings.only.includes(name);
  const manyUsers =
    part("users-reads") || part("users-mixed")
      ? await runManyUsersBench({
          ...ownDatabase(procs, workDir, "users", { secret, token }),
          warmupSeconds: settings.warmupSeconds,
          concurrency: settings.concurrency,
          sessions: settings.h2Clients,
          parts: { reads: part("users-reads"), mixed: part("users-mixed") },
        })
      : undefined;
  // Export of a 1 GiB model over gRPC and HTTP (its own service process and database).
  const exportBench =
    !settings.only || settings.only.includes("x")
      ? await runExportBench({
          sizeMb: Number(process.env.BENCH_EXPORT_MB ?? 1024),
          runs: settings.runs,
          adminUrl: settings.adminUrl,
          dbName: `${settings.dbName}_export`,
        })
      : undefined;
  if (exportBench) printExportBench(exportBench);
  const eventsResult = !settings.only || settings.only.includes("events") ? await events(procs, workDir) : undefined;
  const footprintResult = !settings.only || settings.only.includes("footprint") ? await footprint(procs) : undefined;
  const scaleResult = settings.scale || settings.only?.includes("scale") ? await scale(procs, workDir) : undefined;

  mkdirSync(OUT, { recursive: true });
  const file = path.join(OUT, "results.json");
  writeFileSync(
    file,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        machine: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version, cpuBusyBefore: busyBefore },
        settings: { ...settings, adminUrl: undefined },
        dataSet: { ...SEED, ...counts, user: BENCH_USER, userLiveModels: expected.liveModels, caller: `${SERVICE_SUBJECT} (roles: service)` },
        cases: Object.fromEntries([...summaries].map(([k, s]) => [k, s])),
        ratios,
        usage,
        manyUsers,
        export: exportBench,
        events: eventsResult,
        footprint: footprintResult,
        scale: scaleResult,
      },
      null,
      2,
    ),
  );
  console.log(`\nbench: results written to ${path.relative(process.cwd(), file)}`);
  const failed = [...summaries.values()].some((s) => !s.checksPassed || s.failed > 0 || s.runs.some((r) => r.bodiesMatch === false));
  if (failed) {
    console.error("bench: some calls failed (see the table)");
    process.exitCode = 1;
  }
}

async function cleanup(procs: Processes, cleanups: Array<() => Promise<void>>) {
  await procs.stopAll();
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (error) {
      console.error(`bench: cleanup: ${(error as Error).message}`);
    }
  }
}

const procs = new Processes();
const cleanups: Array<() => Promise<void>> = [];
process.on("exit", () => procs.killAllNow());
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`\nbench: ${sig}, stopping`);
    void cleanup(procs, cleanups).finally(() => process.exit(130));
  });
}
main(procs, cleanups)
  .catch((error: Error) => {
    console.error(`bench: ${error.message}`);
    process.exitCode = 1;
  })
  .finally(() => cleanup(procs, cleanups).then(() => process.exit()));
