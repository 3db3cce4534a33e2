/**
 * The many-users read cases (BENCH_ONLY=users): GetActiveVoiceModel and ListVoiceModels (limit 20)
 * over gRPC for a user drawn per call, uniformly from 10,000 users and Zipf(s=1.1) over 100,000,
 * each against our service with the in-process cache on and with it off
 * (IN_PROCESS_CACHE_ENTRIES=0), and against a bare grpc-js server running the same SQL
 * (bench/baseline-server.ts, modes active and list) for users drawn the same way. One load
 * generator drives all of them (bench/users-load.ts, its own process). Its own database: the
 * seed's layout extended to 100,000 users (bench/seed.ts). Then writes mixed in on two
 * instances (bench/mixed-writes.ts).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import path from "node:path";
import {
  GetActiveVoiceModelRequestSchema,
  GetActiveVoiceModelResponseSchema,
  ListVoiceModelsRequestSchema,
  ListVoiceModelsResponseSchema,
  VoiceModelService,
} from "../gen/voicemodel/v1/voice_model_service_pb";
import { BASELINE_PATH } from "./baseline-server";
import { cpuSnapshot, cpuUse } from "./cpu";
import { grpcCall } from "./client";
import { median } from "./load";
import { baselineArgs, freePort, rssMb, serviceArgs, usersLoadArgs, waitUntilReady, type Child, type OwnDatabaseCase } from "./processes";
import { createBenchDatabase, dropBenchDatabase, expectedFor, migrateAndSeed, userName } from "./seed";
import { havePgbouncer, startPgbouncer, type Pgbouncer } from "../test/helpers/pgbouncer";
import { runMixedWrites } from "./mixed-writes";
import type { Distribution, UsersLoadOptions, UsersLoadResult } from "./users-load";

export interface ManyUsersOptions extends OwnDatabaseCase {
  warmupSeconds: number;
  /** Streams in flight in total, over `sessions` HTTP/2 connections. */
  concurrency: number;
  sessions: number;
  /** Which parts run: the read cases, and writes mixed in on two instances (bench/mixed-writes.ts). */
  parts: { reads: boolean; mixed: boolean };
}

type Rpc = "active" | "list";

/** BENCH_PROFILE=1: each instance writes .bench/profile/users-<name>.cpuprofile (bench/profile-summary.ts). */
const profileArgs = (root: string, name: string) =>
  process.env.BENCH_PROFILE === "1" ? ["--cpu-prof", `--cpu-prof-dir=${path.join(root, ".bench", "profile")}`, `--cpu-prof-name=users-${name}.cpuprofile`] : [];
/**
 * pgb: cache off, its pool through a transaction-pooling PgBouncer (LISTEN direct); noop: the bare
 * grpc-js no-op, driven by the same generator, for Zipf with the cache on against it.
 */
type Target = "base" | "on" | "off" | "pgb" | "noop";

interface Draw {
  name: Distribution;
  users: number;
  s: number;
  label: string;
}

const DRAWS: Draw[] = [
  { name: "uniform", users: 10_000, s: 0, label: "uniform/10k" },
  { name: "zipf", users: 100_000, s: 1.1, label: "zipf(1.1)/100k" },
];
const USERS = 100_000;
/** A user of the seed's first group (30 models, so a full page of 20). */
const CHECK_USER = userName(42);

interface CaseRun extends UsersLoadResult {
  round: number;
  serverMsPer1k?: number;
  otherShare?: number;
  inProcessHitRatio?: number;
  tableHitRatio?: number;
  rssMb?: number;
}

interface UsersCase {
  key: string;
  rpc: Rpc;
  draw: Draw;
  target: Target;
  title: string;
  runs: CaseRun[];
  checksPassed: boolean;
}

const rpcPath = (name: string) => `/${VoiceModelService.typeName}/${name}`;

/** The service's cache counters from /metrics: hits and misses by cache. */
async function cacheCounters(httpPort: number): Promise<Map<string, { hits: number; misses: number }>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const out = new Map<string, { hits: number; misses: number }>();
  for (const m of text.matchAll(/^voice_model_cache_(hits|misses)_total\{cache="([^"]+)"\} (\d+)/gm)) {
    const entry = out.get(m[2]) ?? { hits: 0, misses: 0 };
    entry[m[1] as "hits" | "misses"] = Number(m[3]);
    out.set(m[2], entry);
  }
  return out;
}

function hitRatio(before: Map<string, { hits: number; misses: number }>, after: Map<string, { hits: number; misses: number }>, cache: string) {
  const b = before.get(cache) ?? { hits: 0, misses: 0 };
  const a = after.get(cache) ?? { hits: 0, misses: 0 };
  const hits = a.hits - b.hits;
  const total = hits + a.misses - b.misses;
  return total > 0 ? hits / total : undefined;
}

/** Stops the processes this bench started (by pid), leaving the rest of the bench's running. */
async function stopChildren(children: Child[]): Promise<void> {
  for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill("SIGTERM");
  const timer = setTimeout(() => children.forEach((c) => c.proc.exitCode === null && c.proc.kill("SIGKILL")), 5_000);
  await Promise.all(children.map((c) => c.exited));
  clearTimeout(timer);
}

export async function runManyUsersBench(o: ManyUsersOptions): Promise<Record<string, unknown>> {
  let started = Date.now();
  const dbUrl = await createBenchDatabase(o.adminUrl, o.dbName);
  const children: Child[] = [];
  let bouncer: Pgbouncer | undefined;
  try {
    const counts = await migrateAndSeed(dbUrl, USERS);
    const expected = await expectedFor(dbUrl, CHECK_USER);
    console.log(
      `\nbench users: database ${o.dbName}: ${counts.models} models of ${counts.owners} users seeded in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );

    const track = (child: Child) => (children.push(child), child);
    const ports = { onGrpc: await freePort(), onHttp: await freePort(), bGrpc: await freePort(), bHttp: await freePort(), pgbGrpc: await freePort(), pgbHttp: await freePort(), offGrpc: await freePort(), offHttp: await freePort(), active: await freePort(), list: await freePort(), noop: await freePort() };
    const service = (name: string, grpcPort: number, httpPort: number, extra: Record<string, string>) =>
      track(o.procs.start(`service ${name}`, process.execPath, [...profileArgs(o.root, name), ...serviceArgs(o.root)], {
        cwd: o.root,
        env: {
          ...process.env,
          PORT: String(httpPort),
          GRPC_PORT: String(grpcPort),
          DATABASE_URL: dbUrl,
          DATA_DIR: path.join(o.workDir, `data-${name}`),
          JWT_SECRET: o.secret,
          LOG_LEVEL: "warn",
          ...extra,
        },
      }));
    const baseline = (mode: Rpc | "noop", port: number) =>
      track(o.procs.start(`baseline ${mode}`, process.execPath, baselineArgs(o.root), {
        cwd: o.root,
        env: { ...process.env, BASELINE_MODE: mode, PORT: String(port), DATABASE_URL: dbUrl },
      }));
    // GetActive cache off through PgBouncer against direct, when pgbouncer is installed.
    if (o.parts.reads && havePgbouncer) bouncer = await startPgbouncer({ upstream: o.adminUrl, poolSize: 10 });
    const servers: Record<Exclude<Target, "pgb">, Child> & { pgb?: Child; active: Child; list: Child } = {
      noop: baseline("noop", ports.noop),
      on: service("cache-on", ports.onGrpc, ports.onHttp, {}),
      off: service("cache-off", ports.offGrpc, ports.offHttp, { IN_PROCESS_CACHE_ENTRIES: "0" }),
      pgb: bouncer
        ? service("cache-off-pgbouncer", ports.pgbGrpc, ports.pgbHttp, {
            IN_PROCESS_CACHE_ENTRIES: "0",
            DATABASE_URL: bouncer.url(o.dbName),
            DATABASE_LISTEN_URL: dbUrl,
          })
        : undefined,
      base: undefined as unknown as Child,
      active: baseline("active", ports.active),
      list: baseline("list", ports.list),
    };
    if (o.parts.reads && !bouncer) console.log("bench users: no pgbouncer (apt-get install -y pgbouncer): the case through PgBouncer is left out");
    const grpcPort = (target: Target, rpc: Rpc) =>
      target === "on" ? ports.onGrpc : target === "off" ? ports.offGrpc : target === "pgb" ? ports.pgbGrpc : target === "noop" ? ports.noop : ports[rpc];
    const serverOf = (target: Target, rpc: Rpc) => (target === "base" ? servers[rpc] : servers[target]!);
    const clients = new Map<number, grpc.Client>();
    const clientFor = (port: number) => {
      if (!clients.has(port)) clients.set(port, new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure()));
      return clients.get(port)!;
    };

    /** One call for CHECK_USER with a real client; throws on a wrong answer. */
    const check = async (rpc: Rpc, target: Target) => {
      const client = clientFor(grpcPort(target, rpc));
      if (target === "noop") {
        const reply = await grpcCall(client, BASELINE_PATH, Buffer.from(CHECK_USER));
        if (reply.length !== 0) throw new Error("the no-op baseline replied bytes");
        return;
      }
      if (target === "base") {
        const reply = (await grpcCall(client, BASELINE_PATH, Buffer.from(CHECK_USER))).toString();
        const ok = rpc === "active" ? reply === expected.activeId : reply.startsWith(`${expected.liveModels}:${expected.activeId},`) && reply.split(",").length === 20;
        if (!ok) throw new Error(`baseline ${rpc} answered ${reply.slice(0, 80)}`);
        return;
      }
      if (rpc === "active") {
        const request = toBinary(GetActiveVoiceModelRequestSchema, create(GetActiveVoiceModelRequestSchema, { userId: CHECK_USER }));
        const m = fromBinary(GetActiveVoiceModelResponseSchema, await grpcCall(client, rpcPath("GetActiveVoiceModel"), request, o.token)).model;
        if (m?.id !== expected.activeId) throw new Error(`GetActiveVoiceModel (${target}) answered ${m?.id}`);
      } else {
        const request = toBinary(ListVoiceModelsRequestSchema, create(ListVoiceModelsRequestSchema, { userId: CHECK_USER, limit: 20 }));
        const r = fromBinary(ListVoiceModelsResponseSchema, await grpcCall(client, rpcPath("ListVoiceModels"), request, o.token));
        if (r.models.length !== 20 || r.total !== expected.liveModels || r.models[0].id !== expected.activeId) {
          throw new Error(`ListVoiceModels (${target}) answered ${r.models.length} models, total ${r.total}`);
        }
      }
    };

    started = Date.now();
    await Promise.all([
      waitUntilReady(servers.on, () => check("active", "on")),
      waitUntilReady(servers.off, () => check("active", "off")),
      waitUntilReady(servers.active, () => check("active", "base")),
      waitUntilReady(servers.list, () => check("list", "base")),
      waitUntilReady(servers.noop, () => check("active", "noop")),
      servers.pgb ? waitUntilReady(servers.pgb, () => check("active", "pgb")) : undefined,
    ]);
    console.log(`bench users: servers ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);

    const load = async (c: UsersCase, seconds: number): Promise<UsersLoadResult> => {
      const bare = c.target === "base" || c.target === "noop";
      const options: UsersLoadOptions = {
        port: grpcPort(c.target, c.rpc),
        path: bare ? BASELINE_PATH : rpcPath(c.rpc === "active" ? "GetActiveVoiceModel" : "ListVoiceModels"),
        body: bare ? "raw" : c.rpc,
        token: bare ? undefined : o.token,
        users: c.draw.users,
        distribution: c.draw.name,
        s: c.draw.s,
        seconds,
        sessions: o.sessions,
        streams: Math.ceil(o.concurrency / o.sessions),
      };
      const { code, stdout, stderr } = await o.procs.run("users-load", process.execPath, [...usersLoadArgs(o.root), JSON.stringify(options)]);
      if (code !== 0) throw new Error(`users-load exited ${code}: ${stderr}`);
      return JSON.parse(stdout.trim().split("\n").pop()!) as UsersLoadResult;
    };

    const rpcTitle = { active: "GetActiveVoiceModel", list: "ListVoiceModels limit 20" };
    const targetTitle = { base: "bare grpc-js + same SQL", on: "ours, cache on", off: "ours, cache off", pgb: "ours, cache off, via PgBouncer", noop: "bare grpc-js no-op" };
    const cases: UsersCase[] = [];
    for (const rpc of ["active", "list"] as Rpc[]) {
      for (const draw of DRAWS) {
        const targets: Target[] = ["base", "on", "off"];
        if (rpc === "active" && servers.pgb) targets.push("pgb");
        // Zipf with the cache on is held to the no-op too, paired within the round.
        if (rpc === "active" && draw.name === "zipf") targets.splice(2, 0, "noop");
        for (const target of targets) {
          cases.push({ key: `${rpc}/${draw.name}/${target}`, rpc, draw, target, title: `${rpcTitle[rpc]}, ${targetTitle[target]}`, runs: [], checksPassed: true });
        }
      }
    }

    for (let round = 1; o.parts.reads && round <= o.runs; round++) {
      for (const c of cases) {
        try {
          await check(c.rpc, c.target);
        } catch (error) {
          c.checksPassed = false;
          console.error(`  round ${round} ${c.key} check before the run: ${(error as Error).message}; run skipped`);
          continue;
        }
        // The warm-up also fills the cache (when on) the way this distribution does.
        if (o.warmupSeconds > 0) await load(c, o.warmupSeconds);
        const server = serverOf(c.target, c.rpc);
        const httpPort = { on: ports.onHttp, off: ports.offHttp, pgb: ports.pgbHttp, base: undefined, noop: undefined }[c.target];
        const countersBefore = httpPort ? await cacheCounters(httpPort) : undefined;
        const cpuBefore = cpuSnapshot(server.proc.pid, o.dbName);
        const result = await load(c, o.seconds);
        const cpu = cpuUse(cpuBefore, cpuSnapshot(server.proc.pid, o.dbName), result.ok + result.failed);
        const countersAfter = httpPort ? await cacheCounters(httpPort) : undefined;
        const run: CaseRun = {
          ...result,
          round,
          serverMsPer1k: cpu?.serverMsPer1k,
          otherShare: cpu?.otherShare,
          inProcessHitRatio: countersBefore && countersAfter ? hitRatio(countersBefore, countersAfter, "in_process") : undefined,
          tableHitRatio: countersBefore && countersAfter && c.rpc === "list" ? hitRatio(countersBefore, countersAfter, "cache_voice_models") : undefined,
          rssMb: rssMb(server.proc.pid),
        };
        try {
          await check(c.rpc, c.target);
        } catch (error) {
          c.checksPassed = false;
          console.error(`  round ${round} ${c.key} check after the run: ${(error as Error).message}`);
        }
        c.runs.push(run);
        const pct = (v: number | undefined) => (v === undefined ? "-" : `${(v * 100).toFixed(1)}%`);
        console.log(
          `  round ${round} ${c.key.padEnd(18)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.p50Ms.toFixed(2)} ms  p99 ${run.p99Ms.toFixed(2)} ms  ` +
            `server ${run.serverMsPer1k?.toFixed(1) ?? "-"} CPU ms/1k  generator ${run.generatorMsPer1k.toFixed(1)} CPU ms/1k  ` +
            `hits in-process ${pct(run.inProcessHitRatio)}${c.rpc === "list" ? ` table ${pct(run.tableHitRatio)}` : ""}  ` +
            `RSS ${run.rssMb?.toFixed(0) ?? "-"} MB  users ${run.distinctUsers}  ok ${run.ok} failed ${run.failed}${run.firstError ? ` (${run.firstError})` : ""}`,
        );
      }
    }
    clients.forEach((c) => c.close());
    const reads = o.parts.reads ? report(cases) : undefined;
    let mixed: Record<string, unknown> | undefined;
    if (o.parts.mixed) {
      // A second instance with the cache on, for writes on one and reads on the other.
      const second = service("cache-on-b", ports.bGrpc, ports.bHttp, {});
      const probeClient = new grpc.Client(`127.0.0.1:${ports.bGrpc}`, grpc.credentials.createInsecure());
      const request = toBinary(GetActiveVoiceModelRequestSchema, create(GetActiveVoiceModelRequestSchema, { userId: CHECK_USER }));
      await waitUntilReady(second, () => grpcCall(probeClient, rpcPath("GetActiveVoiceModel"), request, o.token));
      probeClient.close();
      mixed = await runMixedWrites({
        procs: o.procs,
        root: o.root,
        dbUrl,
        token: o.token,
        instances: [
          { grpcPort: ports.onGrpc, httpPort: ports.onHttp, pid: servers.on.proc.pid },
          { grpcPort: ports.bGrpc, httpPort: ports.bHttp, pid: second.proc.pid },
        ],
        seconds: o.seconds,
        runs: o.runs,
        warmupSeconds: o.warmupSeconds,
        concurrency: o.concurrency,
        sessions: o.sessions,
        workDir: o.workDir,
        counters: cacheCounters,
        rssMb,
      });
    }
    return { reads, mixed };
  } finally {
    // The servers hold connections to the database: stop them first.
    await stopChildren(children);
    await bouncer?.stop();
    if (!o.keepDb) await dropBenchDatabase(o.adminUrl, o.dbName);
  }
}

function report(cases: UsersCase[]): Record<string, unknown> {
  const f = (n: number | undefined, d = 0) => (n !== undefined && Number.isFinite(n) ? n.toFixed(d) : "-");
  const med = (c: UsersCase, pick: (r: CaseRun) => number | undefined) => {
    const values = c.runs.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
    return values.length ? median(values) : undefined;
  };
  const pct = (v: number | undefined) => (v === undefined ? "-" : `${(v * 100).toFixed(1)}%`);
  const rows = [["case", "what", "generator, users", "req/s", "p50 ms", "p99 ms", "srv CPU ms/1k", "gen CPU ms/1k", "in-proc hits", "table hits", "RSS MB", "ok", "failed", "checks"]];
  for (const c of cases) {
    rows.push([
      c.key,
      c.title,
      `users-load, ${c.draw.label}`,
      f(med(c, (r) => r.rps)),
      f(med(c, (r) => r.p50Ms), 2),
      f(med(c, (r) => r.p99Ms), 2),
      f(med(c, (r) => r.serverMsPer1k), 1),
      f(med(c, (r) => r.generatorMsPer1k), 1),
      c.target === "base" || c.target === "noop" ? "-" : pct(med(c, (r) => r.inProcessHitRatio) ?? (c.target === "off" || c.target === "pgb" ? 0 : undefined)),
      c.rpc === "list" && c.target !== "base" && c.target !== "noop" ? pct(med(c, (r) => r.tableHitRatio)) : "-",
      f(c.runs.at(-1)?.rssMb),
      String(c.runs.reduce((n, r) => n + r.ok, 0)),
      String(c.runs.reduce((n, r) => n + r.failed, 0)),
      c.checksPassed ? "ok" : "FAILED",
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  console.log("");
  for (const [i, r] of rows.entries()) {
    console.log(r.map((cell, col) => (col >= 3 && col <= 12 ? cell.padStart(widths[col]) : cell.padEnd(widths[col]))).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }

  // Paired by round, as run.ts does: the cases of a round run back to back.
  const paired = (ours: UsersCase, base: UsersCase, pick: (r: CaseRun) => number) => {
    const ratios = ours.runs.flatMap((r) => {
      const b = base.runs.find((x) => x.round === r.round);
      return b ? [pick(r) / pick(b)] : [];
    });
    return ratios.length ? median(ratios) : NaN;
  };
  const find = (rpc: Rpc, draw: Distribution, target: Target) => cases.find((c) => c.rpc === rpc && c.draw.name === draw && c.target === target)!;
  const ratios: Array<Record<string, unknown>> = [];
  console.log("\nmany users: ratios to the bare grpc-js server running the same SQL (median of per-round ratios)");
  console.log("                                              req/s   target    p99     target");
  for (const rpc of ["active", "list"] as Rpc[]) {
    for (const draw of DRAWS) {
      const base = find(rpc, draw.name, "base");
      for (const target of ["off", "on"] as Target[]) {
        const ours = find(rpc, draw.name, target);
        const rps = paired(ours, base, (r) => r.rps);
        const p99 = paired(ours, base, (r) => r.p99Ms);
        // The gates hold the cache-off cases to the baseline; cache on is reported.
        const min = target === "off" ? (rpc === "active" ? 0.8 : 0.7) : undefined;
        const rpsResult = min === undefined ? "" : rps >= min ? "PASS" : "MISS";
        const p99Result = target === "off" ? (p99 <= 1.5 ? "PASS" : "MISS") : "";
        ratios.push({ rpc, distribution: draw.label, cache: target, rps, p99, rpsTarget: min, p99Target: target === "off" ? 1.5 : undefined });
        console.log(
          `  ${rpc}/${draw.name} cache ${target}`.padEnd(44) +
            `${f(rps, 2).padStart(6)}   ${min === undefined ? "       " : `>= ${min.toFixed(1)}`} ${rpsResult.padEnd(4)}  ${f(p99, 2).padStart(5)}x  ${target === "off" ? "<= 1.5x" : "       "} ${p99Result}`,
        );
      }
    }
  }
  for (const draw of DRAWS) {
    const pooled = cases.find((c) => c.rpc === "active" && c.draw.name === draw.name && c.target === "pgb");
    if (!pooled) continue;
    const direct = find("active", draw.name, "off");
    const rps = paired(pooled, direct, (r) => r.rps);
    const p99 = paired(pooled, direct, (r) => r.p99Ms);
    ratios.push({ rpc: "active", distribution: draw.label, cache: "off", viaPgbouncerToDirect: rps, p99 });
    console.log(`  active/${draw.name} cache off, PgBouncer/direct`.padEnd(44) + `${f(rps, 2).padStart(6)}                 ${f(p99, 2).padStart(5)}x  (reported)`);
  }
  const zipfOn = find("active", "zipf", "on");
  const noop = cases.find((c) => c.target === "noop");
  if (noop) {
    const rps = paired(zipfOn, noop, (r) => r.rps);
    ratios.push({ rpc: "active", distribution: "zipf", cache: "on", againstNoop: rps, target: 0.7 });
    console.log(`  active/zipf cache on vs bare no-op`.padEnd(44) + `${f(rps, 2).padStart(6)}   >= 0.7 ${rps >= 0.7 ? "PASS" : "MISS"}  (both users-load, same round)`);
  }
  return { cases: cases.map(({ draw, ...c }) => ({ ...c, distribution: draw.label })), ratios };
}
