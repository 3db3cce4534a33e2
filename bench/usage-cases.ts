/**
 * The usage bench cases, run by bench/run.ts after its own cases against the same service:
 *   (g) GetVoiceModelAnalytics, warm (served from cache_voice_analytics), gRPC, h2load 50 streams;
 *   (h) GetVoiceModelAnalytics, cold (cache row deleted before each call), sequential calls;
 *   (i) RecordUsageBatch of 1,000 events, 4 calls in flight (bench/usage-load.ts process).
 * The user has 1,000 models and 1,000,000 usage events (bench/usage-seed.ts). Ratios are to the
 * bare grpc-js no-op (a) of the same run. GetActiveVoiceModel with the in-process cache in front
 * is case (c) of run.ts; its targets against (a) are in run.ts's target lists.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { writeFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { GetVoiceModelAnalyticsRequestSchema, GetVoiceModelAnalyticsResponseSchema } from "../gen/voicemodel/v1/usage_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { openDatabase } from "../src/db/connection";
import { analyticsQuery } from "../src/usage/usage-repository";
import { grpcCall } from "./client";
import { grpcFrame, h2load, median, sequentialTimes, type LoadResult } from "./load";
import type { Processes } from "./processes";
import type { UsageSeed } from "./usage-seed";

export interface UsageBenchOptions {
  procs: Processes;
  grpcPort: number;
  /** A service-role token (reads any user's analytics, records usage). */
  token: string;
  dbUrl: string;
  seed: UsageSeed;
  /** Median req/s and p99 of the bare grpc-js no-op (a) in this run. */
  noop: { rps: number; p99Ms: number } | undefined;
  seconds: number;
  runs: number;
  workDir: string;
  root: string;
}

const rpc = (name: string) => `/${VoiceModelService.typeName}/${name}`;

export async function runUsageBench(o: UsageBenchOptions): Promise<Record<string, unknown>> {
  const client = new grpc.Client(`127.0.0.1:${o.grpcPort}`, grpc.credentials.createInsecure());
  const admin = new pg.Client({ connectionString: o.dbUrl });
  await admin.connect();
  try {
    const request = toBinary(GetVoiceModelAnalyticsRequestSchema, create(GetVoiceModelAnalyticsRequestSchema, { userId: o.seed.userId }));
    const check = async () => {
      const reply = await grpcCall(client, rpc("GetVoiceModelAnalytics"), request, o.token, 30_000);
      const a = fromBinary(GetVoiceModelAnalyticsResponseSchema, reply);
      if (a.totalModels !== o.seed.expected.totalModels || a.totalUsageCount < o.seed.expected.totalUsageCount) {
        throw new Error(`check failed: analytics answered ${a.totalModels} models, ${a.totalUsageCount} events`);
      }
      return 5 + reply.length;
    };

    // The plan of the analytics query: the roll-up tables, never the raw events.
    const db = await openDatabase({ url: o.dbUrl, poolMax: 1 });
    const plan = ((await db.knex.raw(`EXPLAIN ANALYZE ${analyticsQuery(db.knex, o.seed.userId).toString()}`)) as { rows: { "QUERY PLAN": string }[] }).rows
      .map((r) => r["QUERY PLAN"])
      .join("\n");
    await db.close();
    const planTouchesEvents = /usage_events/.test(plan);

    // (h) cold: every call misses the cache table.
    const cold = await sequentialTimes(30, () => admin.query(`DELETE FROM cache_voice_analytics WHERE user_id = $1`, [o.seed.userId]), check);
    cold.sort((a, b) => a - b);
    const coldP50 = cold[Math.floor(cold.length / 2)];
    const coldP99 = cold[cold.length - 1];

    // (g) warm: served from the cache row under load.
    const frameBytes = await check();
    const bodyFile = path.join(o.workDir, "body-g.bin");
    writeFileSync(bodyFile, grpcFrame(request));
    const warmRuns: LoadResult[] = [];
    for (let r = 0; r < o.runs; r++) {
      warmRuns.push(
        await h2load(o.procs, {
          url: `http://127.0.0.1:${o.grpcPort}${rpc("GetVoiceModelAnalytics")}`,
          bodyFile,
          headers: { "content-type": "application/grpc", te: "trailers", authorization: `Bearer ${o.token}` },
          seconds: o.seconds,
          clients: 5,
          streamsPerClient: 10,
          replyFrameBytes: frameBytes,
          workDir: o.workDir,
        }),
      );
    }
    const warm = { rps: median(warmRuns.map((r) => r.rps)), p50Ms: median(warmRuns.map((r) => r.p50Ms)), p99Ms: median(warmRuns.map((r) => r.p99Ms)) };
    const warmFailed = warmRuns.reduce((n, r) => n + r.failed, 0) + warmRuns.filter((r) => r.bodiesMatch === false).length;

    // (i) RecordUsageBatch from its own process.
    const batchRuns: Array<{ eventsPerSecond: number; callsPerSecond: number; p50Ms: number; p99Ms: number; failed: number; firstError?: string }> = [];
    for (let r = 0; r < o.runs; r++) {
      const child = o.procs.start("usage-load", process.execPath, ["--import", "tsx", "bench/usage-load.ts"], {
        cwd: o.root,
        env: {
          ...process.env,
          TARGET: `127.0.0.1:${o.grpcPort}`,
          TOKEN: o.token,
          USER_ID: o.seed.userId,
          MODEL_IDS: o.seed.modelIds.join(","),
          SECONDS: String(o.seconds),
        },
      });
      const code = await child.exited;
      const line = child.output().trim().split("\n").pop() ?? "";
      if (code !== 0) throw new Error(`usage-load exited ${code}: ${child.output()}`);
      batchRuns.push(JSON.parse(line));
    }
    const batch = {
      eventsPerSecond: median(batchRuns.map((r) => r.eventsPerSecond)),
      callsPerSecond: median(batchRuns.map((r) => r.callsPerSecond)),
      p50Ms: median(batchRuns.map((r) => r.p50Ms)),
      p99Ms: median(batchRuns.map((r) => r.p99Ms)),
      failed: batchRuns.reduce((n, r) => n + r.failed, 0),
      firstError: batchRuns.find((r) => r.firstError)?.firstError,
    };

    const f = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : "-");
    const noopRps = o.noop?.rps ?? NaN;
    console.log(`\nusage: user with ${o.seed.expected.totalModels} models and ${o.seed.expected.totalUsageCount} usage events`);
    console.log(`  analytics query plan reads raw events: ${planTouchesEvents ? "YES (bad)" : "no"} (usage_totals joined to voice_models)`);
    console.log(`  (g) GetVoiceModelAnalytics warm (cached), gRPC   ${f(warm.rps).padStart(7)} req/s  p50 ${f(warm.p50Ms, 2)} ms  p99 ${f(warm.p99Ms, 2)} ms  failed ${warmFailed}  (g)/(a) ${f(warm.rps / noopRps, 2)}`);
    console.log(`  (h) GetVoiceModelAnalytics cold, sequential      p50 ${f(coldP50, 2)} ms  max ${f(coldP99, 2)} ms  (${f(1000 / coldP50)} calls/s on one stream; (h)/(a) ${f(1000 / coldP50 / noopRps, 3)})`);
    console.log(`  (i) RecordUsageBatch x1000, 4 in flight          ${f(batch.eventsPerSecond).padStart(7)} events/s (${f(batch.callsPerSecond, 1)} calls/s)  p50 ${f(batch.p50Ms, 1)} ms  p99 ${f(batch.p99Ms, 1)} ms  failed ${batch.failed}  events/s per no-op req/s ${f(batch.eventsPerSecond / noopRps, 2)}`);
    if (batch.firstError) console.log(`      first error: ${batch.firstError}`);
    return {
      planTouchesEvents,
      plan,
      analyticsWarm: { ...warm, failed: warmFailed, ratioToNoop: warm.rps / noopRps },
      analyticsCold: { p50Ms: coldP50, maxMs: coldP99, samples: cold.length },
      recordUsageBatch: { ...batch, eventsPerSecondPerNoopRps: batch.eventsPerSecond / noopRps },
    };
  } finally {
    client.close();
    await admin.end();
  }
}
