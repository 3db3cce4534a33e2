/**
 * Writes mixed in (part of BENCH_ONLY=users): two instances with the in-process cache on share one
 * PostgreSQL; the load generator sends 95% GetActiveVoiceModel and 5% writes (activate the user's
 * other seeded model, or a create) for Zipf(1.1) users, its connections alternating between the
 * instances. Meanwhile a prober writes for its own users (never drawn by the generator) on one
 * instance and measures, after each acknowledged write, that the writing instance serves it at
 * once and how long until the other instance serves it (staleness: polled with back-to-back
 * reads, so its resolution is one read's round trip).
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { writeFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import {
  ActivateVoiceModelRequestSchema,
  GetActiveVoiceModelRequestSchema,
  GetActiveVoiceModelResponseSchema,
  VoiceModelService,
} from "../gen/voicemodel/v1/voice_model_service_pb";
import { median, percentileOf } from "./load";
import { usersLoadArgs, type Processes } from "./processes";
import { userName } from "./seed";
import type { UsersLoadOptions, UsersLoadResult } from "./users-load";

export interface MixedWritesOptions {
  procs: Processes;
  root: string;
  dbUrl: string;
  token: string;
  /** gRPC and HTTP ports of the two instances (both with the in-process cache on). */
  instances: Array<{ grpcPort: number; httpPort: number; pid: number | undefined }>;
  seconds: number;
  runs: number;
  warmupSeconds: number;
  concurrency: number;
  sessions: number;
  workDir: string;
  /** Reads the in-process hit/miss counters of an instance from /metrics. */
  counters(httpPort: number): Promise<Map<string, { hits: number; misses: number }>>;
  rssMb(pid: number | undefined): number | undefined;
}

/** Users 0..GENERATOR_USERS-1 are the generator's; the rest of the 100,000 are the prober's. */
const USERS = 100_000;
const GENERATOR_USERS = 99_900;

const rpc = (name: string) => `/${VoiceModelService.typeName}/${name}`;

function unary(client: grpc.Client, method: string, request: Uint8Array, token: string): Promise<Buffer> {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, Buffer.from(request), metadata, { deadline: Date.now() + 5_000 }, (e, r) =>
      e ? reject(e) : resolve(r!),
    ),
  );
}

/** Seeded models 0 and 1 of every user ("u,id0,id1" lines), for the activations. */
async function writeIds(dbUrl: string, file: string): Promise<Map<number, [string, string]>> {
  const client = new pg.Client({ connectionString: dbUrl });
  await client.connect();
  try {
    const { rows } = await client.query<{ u: number; k: number; id: string }>(
      `SELECT split_part(model_path, '/', 4)::int AS u, split_part(split_part(model_path, '/', 5), '.', 1)::int AS k, id
         FROM voice_models WHERE model_path ~ '^gs://bench-models/[0-9]+/[01][.]pth$'`,
    );
    const ids = new Map<number, [string, string]>();
    for (const r of rows) {
      const pair = ids.get(r.u) ?? ["", ""];
      pair[r.k] = r.id;
      ids.set(r.u, pair);
    }
    writeFileSync(file, [...ids].map(([u, [a, b]]) => `${u},${a},${b}`).join("\n"));
    return ids;
  } finally {
    await client.end();
  }
}

export async function runMixedWrites(o: MixedWritesOptions): Promise<Record<string, unknown>> {
  const idsFile = path.join(o.workDir, "mixed-ids.csv");
  const ids = await writeIds(o.dbUrl, idsFile);
  const clients = o.instances.map((i) => new grpc.Client(`127.0.0.1:${i.grpcPort}`, grpc.credentials.createInsecure()));
  const activeOf = new Map<number, 0 | 1>();

  const getActive = async (client: grpc.Client, user: number) =>
    fromBinary(
      GetActiveVoiceModelResponseSchema,
      await unary(client, rpc("GetActiveVoiceModel"), toBinary(GetActiveVoiceModelRequestSchema, create(GetActiveVoiceModelRequestSchema, { userId: userName(user) })), o.token),
    ).model?.id;

  const load = async (seconds: number): Promise<UsersLoadResult> => {
    const options: UsersLoadOptions = {
      port: o.instances[0].grpcPort,
      path: rpc("GetActiveVoiceModel"),
      body: "active",
      token: o.token,
      users: GENERATOR_USERS,
      distribution: "zipf",
      s: 1.1,
      seconds,
      sessions: o.sessions,
      streams: Math.ceil(o.concurrency / o.sessions),
      mix: { writeShare: 0.05, ports: o.instances.map((i) => i.grpcPort), idsFile },
    };
    const { code, stdout, stderr } = await o.procs.run("users-load", process.execPath, [...usersLoadArgs(o.root), JSON.stringify(options)]);
    if (code !== 0) throw new Error(`users-load exited ${code}: ${stderr}`);
    return JSON.parse(stdout.trim().split("\n").pop()!) as UsersLoadResult;
  };

  /** Probes until `until` resolves: write on one instance, read it there, wait for the other. */
  const probe = async (until: Promise<unknown>) => {
    let done = false;
    void until.finally(() => (done = true));
    const staleness: number[] = [];
    let writerStale = 0;
    let timedOut = 0;
    for (let i = 0; !done; i++) {
      const user = GENERATOR_USERS + (i % (USERS - GENERATOR_USERS));
      const [writer, other] = i % 2 === 0 ? [clients[0], clients[1]] : [clients[1], clients[0]];
      const pair = ids.get(user)!;
      const target = (activeOf.get(user) ?? 0) === 0 ? 1 : 0;
      // The other instance has the current answer cached.
      await getActive(other, user);
      await getActive(other, user);
      await unary(writer, rpc("ActivateVoiceModel"), toBinary(ActivateVoiceModelRequestSchema, create(ActivateVoiceModelRequestSchema, { modelId: pair[target] })), o.token);
      const acked = performance.now();
      activeOf.set(user, target);
      if ((await getActive(writer, user)) !== pair[target]) writerStale++;
      for (;;) {
        if ((await getActive(other, user)) === pair[target]) {
          staleness.push(performance.now() - acked);
          break;
        }
        if (performance.now() - acked > 5_000) {
          timedOut++;
          break;
        }
      }
    }
    return { staleness, writerStale, timedOut };
  };

  const runs: Array<Record<string, unknown>> = [];
  const allStaleness: number[] = [];
  try {
    for (let round = 1; round <= o.runs; round++) {
      if (o.warmupSeconds > 0) await load(o.warmupSeconds);
      const before = await Promise.all(o.instances.map((i) => o.counters(i.httpPort)));
      const running = load(o.seconds);
      const probed = await probe(running);
      const result = await running;
      const after = await Promise.all(o.instances.map((i) => o.counters(i.httpPort)));
      const hits = o.instances.map((_, n) => {
        const b = before[n].get("in_process") ?? { hits: 0, misses: 0 };
        const a = after[n].get("in_process") ?? { hits: 0, misses: 0 };
        const h = a.hits - b.hits;
        return h / Math.max(1, h + a.misses - b.misses);
      });
      allStaleness.push(...probed.staleness);
      const run = {
        round,
        ...result,
        hitRatios: hits,
        rssMb: o.instances.map((i) => o.rssMb(i.pid)),
        probes: probed.staleness.length + probed.timedOut,
        writerStale: probed.writerStale,
        timedOut: probed.timedOut,
        staleness: { p50: percentileOf(probed.staleness, 50), p90: percentileOf(probed.staleness, 90), p99: percentileOf(probed.staleness, 99), max: Math.max(...probed.staleness) },
      };
      runs.push(run);
      console.log(
        `  round ${round} mixed/zipf/2 inst ${result.rps.toFixed(0).padStart(6)} calls/s  reads p50 ${result.p50Ms.toFixed(2)} ms p99 ${result.p99Ms.toFixed(2)} ms  ` +
          `writes ${result.writes?.ok} (+${result.writes?.alreadyActive} already active) p50 ${result.writes?.p50Ms.toFixed(2)} ms p99 ${result.writes?.p99Ms.toFixed(2)} ms  ` +
          `hits in-process ${hits.map((h) => `${(h * 100).toFixed(1)}%`).join("/")}  RSS ${run.rssMb.map((r) => r?.toFixed(0) ?? "-").join("/")} MB  ` +
          `failed ${result.failed}${result.firstError ? ` (${result.firstError})` : ""}`,
      );
    }
  } finally {
    clients.forEach((c) => c.close());
  }
  const f = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "-");
  const writerStale = runs.reduce((n, r) => n + (r.writerStale as number), 0);
  const timedOut = runs.reduce((n, r) => n + (r.timedOut as number), 0);
  const buckets = [1, 5, 10, 50, 100, 1000];
  const histogram = buckets.map((b, i) => `<=${b} ms: ${allStaleness.filter((s) => s <= b && (i === 0 || s > buckets[i - 1])).length}`);
  histogram.push(`>1000 ms: ${allStaleness.filter((s) => s > 1000).length + timedOut}`);
  const p99 = percentileOf(allStaleness, 99);
  const max = allStaleness.length ? Math.max(...allStaleness) : NaN;
  console.log(
    `\nmixed writes (95% GetActive / 5% activate or create, Zipf(1.1) over ${GENERATOR_USERS} users, two instances, users-load): ` +
      `median ${f(median(runs.map((r) => r.rps as number)))} calls/s`,
  );
  console.log(
    `  writer reads after an acknowledged write: ${writerStale} stale of ${allStaleness.length + timedOut} (target 0: ${writerStale === 0 ? "PASS" : "MISS"})`,
  );
  console.log(
    `  cross-instance staleness over ${allStaleness.length + timedOut} probed writes: p50 ${f(percentileOf(allStaleness, 50))} ms, p90 ${f(percentileOf(allStaleness, 90))} ms, ` +
      `p99 ${f(p99)} ms (<= 100: ${p99 <= 100 ? "PASS" : "MISS"}), max ${f(max)} ms (<= 1000: ${max <= 1000 && timedOut === 0 ? "PASS" : "MISS"})`,
  );
  console.log(`  distribution: ${histogram.join(", ")}`);
  return { runs, writerStale, timedOut, staleness: { p50: percentileOf(allStaleness, 50), p90: percentileOf(allStaleness, 90), p99, max, histogram } };
}
