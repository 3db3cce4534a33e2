/**
 * The footprint case (BENCH_ONLY=footprint): the server started the documented way (`npm start`)
 * on a fresh temp data folder, its RSS and its process tree's while idle after a first start and
 * after a restart (embedded), in PostgreSQL mode (a throwaway database), the warm start's time to
 * a first answer, and the RSS after 10,000 calls over many users with the in-process cache's
 * accounted size beside it (and, for comparison, the same calls with the cache off). Baselines: a bare `node -e` process and a bare PGlite opening the same folder, each in
 * its own child process. RSS is VmRSS from /proc/<pid>/status; a tree is a pid and its children
 * (/proc/<pid>/task/<tid>/children), recursively.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import {
  GetActiveVoiceModelRequestSchema,
  GetActiveVoiceModelResponseSchema,
  ListVoiceModelsRequestSchema,
  VoiceModelService,
  WhoAmIRequestSchema,
} from "../gen/voicemodel/v1/voice_model_service_pb";
import { grpcCall, hs256Token } from "./client";
import { freePort, rssMb, type Child, type Processes } from "./processes";
import { createBenchDatabase, dropBenchDatabase, migrateAndSeed, seedEmbedded, userName } from "./seed";

export interface FootprintOptions {
  procs: Processes;
  root: string;
  /** PostgreSQL admin URL for the throwaway database of PostgreSQL mode. */
  adminUrl: string;
  dbName: string;
  /** The later idle sample, seconds after the first answer (the first is at 5 s). */
  idleSeconds: number;
}

/** RSS targets (MB) of an idle server process; after the calls, RSS minus the cache. */
const TARGET_MB = { embedded: 250, postgres: 150 } as const;
const WARM_START_TARGET_S = 5;
const CALLS = 10_000;
/** What a cached model costs, as the README sizes IN_PROCESS_CACHE_ENTRIES (about 1 KB each). */
const CACHE_KB_PER_MODEL = 1;
const cacheMb = (a: { cacheModels: number }) => (a.cacheModels * CACHE_KB_PER_MODEL) / 1024;
const USERS = 1_000;
const CONCURRENCY = 20;
const SUBJECT = "bench-footprint";

/** The node options of package.json's start script, so the baselines run like the server. */
const NODE_OPTIONS_OF_START = ["--v8-pool-size=2", "--max-semi-space-size=8"];

const rpc = (name: string) => `/${VoiceModelService.typeName}/${name}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function childPids(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").split(/\s+/).filter(Boolean).map(Number),
    );
  } catch {
    return [];
  }
}

function comm(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim();
  } catch {
    return "?";
  }
}

/** A process and its descendants: their pids and summed RSS (MB). */
function tree(pid: number): { pids: number[]; rssMb: number } {
  const pids = [pid];
  for (let i = 0; i < pids.length; i++) pids.push(...childPids(pids[i]));
  return { pids, rssMb: pids.reduce((sum, p) => sum + (rssMb(p) ?? 0), 0) };
}

interface IdleSample {
  /** Seconds after the first answer. */
  at: number;
  serverMb: number;
  treeMb: number;
  /** The tree's processes by name (/proc/<pid>/comm). */
  treeProcesses: string[];
}

interface Started {
  npm: Child;
  /** The node server process `npm start` execs into (npm's child). */
  serverPid: number;
  /** Spawn to the first /readyz 200 and to the first answered RPC, seconds. */
  readyS: number;
  firstAnswerS: number;
  grpcPort: number;
  httpPort: number;
  client: grpc.Client;
}

async function startServer(o: FootprintOptions, name: string, env: Record<string, string | undefined>, token: string): Promise<Started> {
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  const t0 = performance.now();
  const npm = o.procs.start(name, "npm", ["start"], {
    cwd: o.root,
    env: { ...process.env, DATABASE_URL: undefined, PORT: String(httpPort), GRPC_PORT: String(grpcPort), LOG_LEVEL: "warn", ...env },
  });
  let exited: number | string | undefined;
  void npm.exited.then((code) => (exited = code));
  const client = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  const deadline = Date.now() + 120_000;
  const alive = () => {
    if (exited !== undefined) throw new Error(`${name} exited (${exited}) before answering:\n${npm.output()}`);
    if (Date.now() > deadline) throw new Error(`${name} did not answer within 120 s:\n${npm.output()}`);
  };
  let readyS: number | undefined;
  for (;;) {
    alive();
    const res = await fetch(`http://127.0.0.1:${httpPort}/readyz`).catch(() => undefined);
    if (res?.status === 200) {
      readyS = (performance.now() - t0) / 1000;
      break;
    }
    await sleep(50);
  }
  for (;;) {
    alive();
    const ok = await grpcCall(client, rpc("WhoAmI"), toBinary(WhoAmIRequestSchema, create(WhoAmIRequestSchema, {})), token).then(() => true, () => false);
    if (ok) break;
    await sleep(50);
  }
  const firstAnswerS = (performance.now() - t0) / 1000;
  const serverPid = childPids(npm.proc.pid!).find((p) => /node/.test(readFileSync(`/proc/${p}/cmdline`, "utf8")));
  if (!serverPid) throw new Error(`${name}: no node process under npm (pid ${npm.proc.pid})`);
  return { npm, serverPid, readyS, firstAnswerS, grpcPort, httpPort, client };
}

/** Samples the server and its tree 5 s and idleSeconds after the first answer (nothing is called meanwhile). */
async function idleSamples(s: Started, idleSeconds: number): Promise<IdleSample[]> {
  const samples: IdleSample[] = [];
  const t0 = performance.now();
  for (const at of [5, idleSeconds]) {
    await sleep(Math.max(0, at * 1000 - (performance.now() - t0)));
    const t = tree(s.npm.proc.pid!);
    samples.push({ at, serverMb: rssMb(s.serverPid) ?? NaN, treeMb: t.rssMb, treeProcesses: t.pids.map(comm) });
  }
  return samples;
}

async function stopServer(s: Started): Promise<void> {
  s.client.close();
  process.kill(s.serverPid, "SIGTERM");
  const timer = setTimeout(() => process.kill(s.serverPid, "SIGKILL"), 15_000);
  await s.npm.exited;
  clearTimeout(timer);
}

/** CALLS calls, half GetActiveVoiceModel and half ListVoiceModels (limit 20), users drawn uniformly. */
async function manyUserCalls(s: Started, token: string): Promise<{ ok: number; failed: number; seconds: number }> {
  let next = 0;
  let ok = 0;
  let failed = 0;
  let seed = 7;
  // A 32-bit LCG in integer arithmetic; its high bits pick the user.
  const draw = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) % USERS;
  const t0 = performance.now();
  const worker = async () => {
    while (next < CALLS) {
      const i = next++;
      const userId = userName(draw());
      const [method, body] =
        i % 2 === 0
          ? [rpc("GetActiveVoiceModel"), toBinary(GetActiveVoiceModelRequestSchema, create(GetActiveVoiceModelRequestSchema, { userId }))]
          : [rpc("ListVoiceModels"), toBinary(ListVoiceModelsRequestSchema, create(ListVoiceModelsRequestSchema, { userId, limit: 20 }))];
      try {
        const reply = await grpcCall(s.client, method, body, token);
        if (i % 2 === 0 && fromBinary(GetActiveVoiceModelResponseSchema, reply).model?.userId !== userId) throw new Error("wrong user");
        ok++;
      } catch {
        failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { ok, failed, seconds: (performance.now() - t0) / 1000 };
}

/** The in-process cache's accounted size, and where the process's memory is, from /metrics. */
async function cacheSize(s: Started): Promise<{ models: number; users: number; heapTotalMb: number; heapUsedMb: number; externalMb: number }> {
  const text = await (await fetch(`http://127.0.0.1:${s.httpPort}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? NaN);
  const mb = (name: string) => value(name) / 2 ** 20;
  return {
    models: value("voice_model_in_process_cache_models"),
    users: value("voice_model_in_process_cache_users"),
    heapTotalMb: mb("nodejs_heap_size_total_bytes"),
    heapUsedMb: mb("nodejs_heap_size_used_bytes"),
    // ArrayBuffers and other memory outside the heap: PGlite's WebAssembly memory is among it.
    externalMb: mb("nodejs_external_memory_bytes"),
  };
}

/** A child process that loads nothing (`node -e`), or that opens the folder with a bare PGlite. */
async function baseline(o: FootprintOptions, name: string, script: string, args: string[]): Promise<number> {
  const child = o.procs.start(name, process.execPath, [...NODE_OPTIONS_OF_START, "-e", script, ...args]);
  await new Promise<void>((resolve, reject) => {
    child.proc.stdout!.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && resolve());
    void child.exited.then((code) => reject(new Error(`${name} exited (${code}):\n${child.output()}`)));
  });
  await sleep(5_000);
  const mb = rssMb(child.proc.pid!) ?? NaN;
  child.proc.kill("SIGTERM");
  await child.exited;
  return mb;
}

export interface FootprintResult {
  bareNodeMb: number;
  barePgliteMb: number;
  embeddedFirst: { readyS: number; firstAnswerS: number; idle: IdleSample[] };
  embeddedRestart: { readyS: number; firstAnswerS: number; idle: IdleSample[] };
  warmStartS: number;
  afterCalls: { calls: number; users: number; ok: number; failed: number; serverMb: number; idleServerMb: number; idleHeapTotalMb: number; cacheModels: number; cacheUsers: number; cacheOffMb: number; heapTotalMb: number; heapUsedMb: number; externalMb: number };
  postgres?: { readyS: number; firstAnswerS: number; idle: IdleSample[] };
  postgresSkipped?: string;
}

export async function runFootprintBench(o: FootprintOptions): Promise<FootprintResult> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "vm-footprint-"));
  const secret = randomBytes(32).toString("hex");
  const token = hs256Token(secret, { sub: SUBJECT, roles: ["service"], exp: Math.floor(Date.now() / 1000) + 3600 });
  const embeddedEnv = { DATA_DIR: dataDir, JWT_SECRET: secret };
  try {
    console.log(`\nfootprint: npm start on a fresh data folder (${dataDir}), idle samples 5 s and ${o.idleSeconds} s after the first answer`);
    const bareNodeMb = await baseline(o, "bare node", `process.stdout.write("ready\\n"); setInterval(() => {}, 1000);`, []);

    const first = await startServer(o, "embedded, first start", embeddedEnv, token);
    const firstIdle = await idleSamples(first, o.idleSeconds);
    await stopServer(first);
    console.log(`  first start answered in ${first.firstAnswerS.toFixed(1)} s`);

    // The same start parameters as the service's PGlite (src/db/connection.ts).
    const pgliteUrl = pathToFileURL(require.resolve("@electric-sql/pglite", { paths: [o.root] })).href;
    const barePglite = `import(${JSON.stringify(pgliteUrl)}).then(async ({ PGlite }) => {
      const pg = await PGlite.create(process.argv[1], { startParams: [...PGlite.defaultStartParams, "-c", "shared_buffers=16MB"] });
      await pg.query("SELECT count(*) FROM voice_models");
      process.stdout.write("ready\\n");
      setInterval(() => {}, 1000);
    })`;
    const barePgliteMb = await baseline(o, "bare PGlite", barePglite, [path.join(dataDir, "pglite")]);

    const seeded = await seedEmbedded(dataDir, USERS);
    console.log(`  seeded ${seeded.models} models of ${USERS} users`);

    const warm = await startServer(o, "embedded, restart", embeddedEnv, token);
    const warmIdle = await idleSamples(warm, o.idleSeconds);
    const calls = await manyUserCalls(warm, token);
    await sleep(5_000);
    const afterMb = rssMb(warm.serverPid) ?? NaN;
    const cache = await cacheSize(warm);
    // And once idle 30 s: V8 gives heap back only after allocation calms down.
    await sleep(25_000);
    const afterIdleMb = rssMb(warm.serverPid) ?? NaN;
    const idleMemory = await cacheSize(warm);
    await stopServer(warm);
    console.log(`  ${CALLS} calls in ${calls.seconds.toFixed(1)} s (${calls.failed} failed)`);

    const off = await startServer(o, "embedded, cache off", { ...embeddedEnv, IN_PROCESS_CACHE_ENTRIES: "0" }, token);
    await sleep(5_000);
    const offCalls = await manyUserCalls(off, token);
    await sleep(5_000);
    const cacheOffMb = rssMb(off.serverPid) ?? NaN;
    await stopServer(off);

    const result: FootprintResult = {
      bareNodeMb,
      barePgliteMb,
      embeddedFirst: { readyS: first.readyS, firstAnswerS: first.firstAnswerS, idle: firstIdle },
      embeddedRestart: { readyS: warm.readyS, firstAnswerS: warm.firstAnswerS, idle: warmIdle },
      warmStartS: warm.firstAnswerS,
      afterCalls: {
        calls: CALLS,
        users: USERS,
        ok: calls.ok + offCalls.ok,
        failed: calls.failed + offCalls.failed,
        serverMb: afterMb,
        idleServerMb: afterIdleMb,
        idleHeapTotalMb: idleMemory.heapTotalMb,
        cacheModels: cache.models,
        cacheUsers: cache.users,
        heapTotalMb: cache.heapTotalMb,
        heapUsedMb: cache.heapUsedMb,
        externalMb: cache.externalMb,
        cacheOffMb,
      },
    };

    let dbUrl: string | undefined;
    try {
      dbUrl = await createBenchDatabase(o.adminUrl, o.dbName);
      await migrateAndSeed(dbUrl, 0);
    } catch (error) {
      result.postgresSkipped = `PostgreSQL not reachable at ${o.adminUrl.replace(/\/\/[^@]*@/, "//")}: ${(error as Error).message}`;
    }
    if (dbUrl) {
      try {
        const pgDir = mkdtempSync(path.join(os.tmpdir(), "vm-footprint-pg-"));
        const pgServer = await startServer(o, "PostgreSQL mode", { DATA_DIR: pgDir, JWT_SECRET: secret, DATABASE_URL: dbUrl }, token);
        const idle = await idleSamples(pgServer, o.idleSeconds);
        await stopServer(pgServer);
        rmSync(pgDir, { recursive: true, force: true });
        result.postgres = { readyS: pgServer.readyS, firstAnswerS: pgServer.firstAnswerS, idle };
      } finally {
        await dropBenchDatabase(o.adminUrl, o.dbName);
      }
    }
    return result;
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

export function printFootprint(r: FootprintResult): void {
  const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
  const verdict = (mb: number, target: number) => `${f(mb).padStart(4)} MB  ${f(mb / target, 2)} of ${target} MB  ${mb < target ? "PASS" : "MISS"}`;
  console.log("\nfootprint (VmRSS; server = the node process `npm start` execs; tree = npm and everything under it)");
  console.log(`  baseline: bare node -e                      ${f(r.bareNodeMb).padStart(4)} MB  (${NODE_OPTIONS_OF_START.join(" ")}, as npm start)`);
  console.log(`  baseline: bare PGlite on the same folder    ${f(r.barePgliteMb).padStart(4)} MB  (shared_buffers=16MB, one query)`);
  const idleLines = (label: string, idle: IdleSample[], target: number) => {
    for (const s of idle) {
      console.log(
        `  ${`${label}, idle ${s.at} s`.padEnd(43)}  server ${verdict(s.serverMb, target)}   tree ${f(s.treeMb)} MB (${s.treeProcesses.join(", ")})` +
          `   ${f(s.serverMb / r.bareNodeMb, 1)}x bare node, ${f(s.serverMb / r.barePgliteMb, 2)}x bare PGlite`,
      );
    }
  };
  idleLines("embedded, first start", r.embeddedFirst.idle, TARGET_MB.embedded);
  idleLines("embedded, restart", r.embeddedRestart.idle, TARGET_MB.embedded);
  if (r.postgres) idleLines("PostgreSQL mode", r.postgres.idle, TARGET_MB.postgres);
  else console.log(`  PostgreSQL mode: skipped (${r.postgresSkipped})`);
  console.log(
    `  warm start to first answer (WhoAmI)         ${f(r.warmStartS, 1)} s  target < ${WARM_START_TARGET_S} s  ${r.warmStartS < WARM_START_TARGET_S ? "PASS" : "MISS"}` +
      `   (readyz ${f(r.embeddedRestart.readyS, 1)} s; first start ${f(r.embeddedFirst.firstAnswerS, 1)} s` +
      (r.postgres ? `; PostgreSQL mode ${f(r.postgres.firstAnswerS, 1)} s)` : ")"),
  );
  const a = r.afterCalls;
  console.log(
    `  embedded after ${a.calls} calls over ${a.users} users  server ${f(a.serverMb)} MB; the in-process cache holds ${a.cacheModels} models of ${a.cacheUsers} users` +
      ` (~${f(cacheMb(a))} MB at ${CACHE_KB_PER_MODEL} KB a model)${a.failed ? `   ${a.failed} CALLS FAILED` : ""}`,
  );
  console.log(
    `    where it is                              V8 heap ${f(a.heapTotalMb)} MB committed (${f(a.heapUsedMb)} MB used); outside the heap ${f(a.externalMb)} MB (PGlite's WebAssembly memory among it)`,
  );
  console.log(`  ${"  RSS minus the cache, 5 s after".padEnd(43)}  server ${verdict(a.serverMb - cacheMb(a), TARGET_MB.embedded)}`);
  console.log(
    `  ${`  RSS minus the cache, idle 30 s after`.padEnd(43)}  server ${verdict(a.idleServerMb - cacheMb(a), TARGET_MB.embedded)}   (V8 heap ${f(a.idleHeapTotalMb)} MB committed)`,
  );
  // Not the run above minus its cache: without it every call reads through the cache table.
  console.log(`  ${"  the same calls, cache off".padEnd(43)}  server ${f(a.cacheOffMb).padStart(4)} MB`);
}

/** Whether every figure met its target (RSS at the later idle sample). */
export function footprintPassed(r: FootprintResult): boolean {
  const last = (idle: IdleSample[]) => idle[idle.length - 1].serverMb;
  return (
    last(r.embeddedFirst.idle) < TARGET_MB.embedded &&
    last(r.embeddedRestart.idle) < TARGET_MB.embedded &&
    (!r.postgres || last(r.postgres.idle) < TARGET_MB.postgres) &&
    r.warmStartS < WARM_START_TARGET_S &&
    r.afterCalls.serverMb - cacheMb(r.afterCalls) < TARGET_MB.embedded &&
    r.afterCalls.failed === 0
  );
}
