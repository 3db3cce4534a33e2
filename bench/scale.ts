/**
 * The scale cases (BENCH_SCALE=1 with the default run, or BENCH_ONLY=scale): 1M models of 100k
 * users, then 10M of 1M users, each in its own database seeded with COPY (pg-copy-streams), and
 * our service with the in-process cache off against it:
 *   - GetActiveVoiceModel, a user drawn uniformly from all of them per call (bench/users-load.ts);
 *   - ListVoiceModels, first page of 20, the same way (a fresh data set misses cache_voice_models);
 *   - a keyset page deep in a 500-model user (page 20 of 25), cold: its cache_voice_models rows
 *     deleted before each call, sequential calls;
 * and in the 10M database a user with 1,000 models, 365 days of roll-ups each and 10M raw usage
 * events: GetVoiceModelAnalytics cold (cache row deleted before each call). Both tiers are seeded
 * first, then measured in rounds, each case on 1M right before 10M. Gates: every 10M p50/p99
 * within 1.3x of its 1M figure (median of per-round ratios); analytics cold p50 < 50 ms.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { statfsSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import pg from "pg";
import { from as copyFrom } from "pg-copy-streams";
import { GetVoiceModelAnalyticsRequestSchema, GetVoiceModelAnalyticsResponseSchema } from "../gen/voicemodel/v1/usage_pb";
import {
  GetActiveVoiceModelRequestSchema,
  GetActiveVoiceModelResponseSchema,
  ListVoiceModelsRequestSchema,
  ListVoiceModelsResponseSchema,
  VoiceModelService,
} from "../gen/voicemodel/v1/voice_model_service_pb";
import { grpcCall } from "./client";
import { median, percentileOf, sequentialTimes } from "./load";
import { freePort, rssMb, serviceArgs, usersLoadArgs, waitUntilReady, type Child, type OwnDatabaseCase } from "./processes";
import { createBenchDatabase, dropBenchDatabase, migrate, userName } from "./seed";
import type { UsersLoadOptions, UsersLoadResult } from "./users-load";

export interface ScaleOptions extends OwnDatabaseCase {
  warmupSeconds: number;
}

interface Tier {
  label: string;
  users: number;
  modelsPerUser: number;
  /** The analytics data set goes into this tier's database. */
  analytics: boolean;
  /** Disk the tier needs, with room to spare (measured about 0.9 KB per model with its indexes). */
  diskGb: number;
}

const TIERS: Tier[] = [
  { label: "1M", users: 100_000, modelsPerUser: 10, analytics: false, diskGb: 2 },
  { label: "10M", users: 1_000_000, modelsPerUser: 10, analytics: true, diskGb: 14 },
];
const DEEP_USER = "bench-scale-deep";
const DEEP_MODELS = 500;
const DEEP_PAGE = 20;
const ANALYTICS = { user: "bench-scale-analytics", models: 1_000, days: 365, events: 10_000_000 } as const;
/** Latency under light load: 10 streams over 2 connections. */
const STREAMS = { sessions: 2, streams: 5 };
const COLD_CALLS = 100;

const rpc = (name: string) => `/${VoiceModelService.typeName}/${name}`;

/** Sequential uuids: each COPY appends to the primary key's index instead of scattering over it. */
const seqUuid = (n: number) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;

/** Rows as COPY text, in chunks of about 256 KB (one chunk per row would cost more than the rows). */
function* chunked(rows: Iterable<string>): Generator<string> {
  let chunk = "";
  for (const row of rows) {
    chunk += row;
    if (chunk.length > 256_000) {
      yield chunk;
      chunk = "";
    }
  }
  if (chunk) yield chunk;
}

async function copyInto(client: pg.Client, table: string, columns: string, rows: Iterable<string>): Promise<void> {
  await pipeline(Readable.from(chunked(rows)), client.query(copyFrom(`COPY ${table} (${columns}) FROM STDIN`)));
}

/**
 * A table's secondary indexes are dropped before a bulk load and built after it, as bulk loads
 * do (one sorted build each instead of millions of scattered inserts). Constraints stay.
 */
async function withoutSecondaryIndexes(client: pg.Client, tables: string[], load: () => Promise<void>): Promise<void> {
  const { rows } = await client.query<{ name: string; def: string }>(
    `SELECT i.indexname AS name, i.indexdef AS def FROM pg_indexes i
      WHERE i.schemaname = 'public' AND i.tablename = ANY($1)
        AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)`,
    [tables],
  );
  for (const r of rows) await client.query(`DROP INDEX ${r.name}`);
  await load();
  await client.query(`SET maintenance_work_mem = '512MB'`);
  for (const r of rows) await client.query(r.def);
}

interface ModelRow {
  id: string;
  userId: string;
  /** The user's number in the seed (for its provider, score and path). */
  u: number;
  k: number;
  createdMs: number;
  /** Every model completed and live (the deep and analytics users), else bench/seed.ts's mix. */
  allLive: boolean;
}

const PROVIDERS = ["xtts-v2", "google-cloud-tts", "openai-tts"];
const RATES = [22050, 24000, 44100];

/**
 * One model as a COPY line. Model k=0 is the user's active one (completed, score 0.950); the
 * others score 0.300-0.899 and, as in bench/seed.ts, k%10 == 7 is failed, 8 training, 9 deleted.
 */
function modelLine(m: ModelRow): string {
  const created = new Date(m.createdMs).toISOString();
  const kind = m.allLive ? 0 : m.k % 10;
  const status = kind === 7 ? "failed" : kind === 8 ? "training" : "completed";
  const deleted = kind === 9 ? new Date(m.createdMs + 86_400_000).toISOString() : "\\N";
  const score = m.k === 0 ? "0.950" : (0.3 + ((m.u * 31 + m.k * 17) % 600) / 1000).toFixed(3);
  return (
    `${m.id}\t${m.userId}\t${PROVIDERS[(m.u + m.k) % 3]}\tgs://bench-scale/${m.userId}/${m.k}.pth\t${RATES[m.k % 3]}\t${score}\t{"seed": ${m.k}}\t` +
    `${m.k === 0 ? "t" : "f"}\t${status}\tjob-${m.k}\t${created}\t${created}\t${deleted}\t${m.k + 1}\n`
  );
}

const MODEL_COLUMNS =
  "id, user_id, provider, model_path, sample_rate, quality_score, metadata, is_active, status, training_job_id, created_at, updated_at, deleted_at, model_number";

/** Seeds a tier: owners, their models, the deep user, and (in one tier) the analytics user. */
async function seedTier(url: string, tier: Tier): Promise<{ models: number; seconds: number; analyticsIds: string[] }> {
  const started = Date.now();
  await migrate(url);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const base = Date.now() - 400 * 86_400_000;
  let next = 1;
  const extra = [
    { userId: DEEP_USER, models: DEEP_MODELS },
    ...(tier.analytics ? [{ userId: ANALYTICS.user, models: ANALYTICS.models }] : []),
  ];
  const analyticsIds: string[] = [];
  try {
    const owners = function* () {
      for (let u = 0; u < tier.users; u++) yield `${userName(u)}\t${new Date(base).toISOString()}\t${tier.modelsPerUser}\n`;
      for (const e of extra) yield `${e.userId}\t${new Date(base).toISOString()}\t${e.models}\n`;
    };
    const models = function* () {
      for (let u = 0; u < tier.users; u++) {
        const userId = userName(u);
        for (let k = 0; k < tier.modelsPerUser; k++) {
          yield modelLine({ id: seqUuid(next++), userId, u, k, createdMs: base + (tier.modelsPerUser - k) * 86_400_000 + u, allLive: false });
        }
      }
      for (const e of extra) {
        for (let k = 0; k < e.models; k++) {
          const id = seqUuid(next++);
          if (e.userId === ANALYTICS.user) analyticsIds.push(id);
          yield modelLine({ id, userId: e.userId, u: k, k, createdMs: base + (e.models - k) * 60_000, allLive: true });
        }
      }
    };
    await client.query("BEGIN");
    await copyInto(client, "model_owners", "user_id, created_at, last_model_number", owners());
    await withoutSecondaryIndexes(client, ["voice_models"], () => copyInto(client, "voice_models", MODEL_COLUMNS, models()));
    await client.query("COMMIT");
    if (tier.analytics) await seedAnalytics(client, analyticsIds, base);
    for (const table of ["model_owners", "voice_models", "usage_events", "usage_daily", "usage_totals"]) await client.query(`VACUUM ANALYZE ${table}`);
    const { rows } = await client.query<{ n: string }>(`SELECT count(*) AS n FROM voice_models`);
    return { models: Number(rows[0].n), seconds: (Date.now() - started) / 1000, analyticsIds };
  } finally {
    await client.end();
  }
}

/** 10M raw events over 365 days of 1,000 models, with the roll-ups the service keeps built from them. */
async function seedAnalytics(client: pg.Client, ids: string[], base: number): Promise<void> {
  const day = 86_400_000;
  const start = base + 30 * day;
  const events = function* () {
    for (let i = 0; i < ANALYTICS.events; i++) {
      const at = new Date(start + (Math.floor(i / ids.length) % ANALYTICS.days) * day + (i % 86_400) * 1000).toISOString();
      yield `${ids[i % ids.length]}\t${ANALYTICS.user}\tseed-${i}\t${i.toString(16).padStart(32, "0")}\t${100 + (i % 400)}\t${50 + (i % 700)}\t${((i % 100) / 10000).toFixed(4)}\t${i % 4 === 0 ? 1 + (i % 5) : "\\N"}\t${at}\t${at}\n`;
    }
  };
  await client.query("BEGIN");
  await withoutSecondaryIndexes(client, ["usage_events"], () =>
    copyInto(client, "usage_events", "model_id, user_id, idempotency_key, payload_hash, characters, latency_ms, cost, quality_rating, used_at, recorded_at", events()),
  );
  const sums = `count(*), sum(cost), sum(latency_ms), sum(coalesce(characters, 0)), sum(coalesce(audio_seconds, 0)),
                sum(coalesce(quality_rating, 0)), count(quality_rating), max(used_at)`;
  const columns = `usage_count, cost_sum, latency_sum, characters_sum, audio_seconds_sum, rating_sum, rating_count, last_used_at`;
  await client.query(`INSERT INTO usage_daily (model_id, day, ${columns}) SELECT model_id, (used_at AT TIME ZONE 'UTC')::date, ${sums} FROM usage_events GROUP BY 1, 2`);
  await client.query(
    `INSERT INTO usage_totals (model_id, ${columns})
     SELECT model_id, sum(usage_count), sum(cost_sum), sum(latency_sum), sum(characters_sum), sum(audio_seconds_sum), sum(rating_sum), sum(rating_count), max(last_used_at)
       FROM usage_daily GROUP BY model_id`,
  );
  await client.query("COMMIT");
}

interface Figure {
  p50Ms: number;
  p99Ms: number;
  rps?: number;
  /** What drove it. */
  generator: string;
  rssMb?: number;
}

/** Free space where PostgreSQL keeps its data (when it runs on this machine), in GB. */
async function freeDiskGb(adminUrl: string): Promise<number | undefined> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const dir = (await client.query<{ data_directory: string }>(`SHOW data_directory`)).rows[0].data_directory;
    const s = statfsSync(dir);
    return (s.bavail * s.bsize) / 1e9;
  } catch {
    return undefined;
  } finally {
    await client.end();
  }
}

/** A seeded tier with its service (cache off) and clients. */
interface Running {
  tier: Tier;
  dbName: string;
  url: string;
  grpcPort: number;
  service: Child;
  client: grpc.Client;
  admin: pg.Client;
  /** The deep page's request (its token walked to with real calls). */
  deepRequest: Uint8Array;
  seed: { models: number; seconds: number; database: string };
}

/** Seeds a tier's database and starts the service on it; undefined when the disk is too small. */
async function startTier(o: ScaleOptions, tier: Tier, onStarted: (r: Running) => void): Promise<Running | undefined> {
  const free = await freeDiskGb(o.adminUrl);
  if (free !== undefined && free < tier.diskGb) {
    console.log(`bench scale ${tier.label}: skipped, ${free.toFixed(1)} GB free where PostgreSQL keeps its data, ${tier.diskGb} GB needed`);
    return undefined;
  }
  const dbName = `${o.dbName}_${tier.label.toLowerCase()}`;
  const url = await createBenchDatabase(o.adminUrl, dbName);
  let seed: Awaited<ReturnType<typeof seedTier>>;
  let database: string;
  try {
    seed = await seedTier(url, tier);
    database = await sizeOf(url);
  } catch (error) {
    if (!o.keepDb) await dropBenchDatabase(o.adminUrl, dbName);
    throw error;
  }
  console.log(
    `bench scale ${tier.label}: ${seed.models.toLocaleString("en")} models of ${(tier.users + 1 + (tier.analytics ? 1 : 0)).toLocaleString("en")} users seeded with COPY in ${seed.seconds.toFixed(0)} s` +
      `${tier.analytics ? ` (with ${ANALYTICS.events.toLocaleString("en")} usage events and ${(ANALYTICS.models * ANALYTICS.days).toLocaleString("en")} daily roll-ups)` : ""}; database ${database}`,
  );
  const grpcPort = await freePort();
  const service = o.procs.start(`service scale ${tier.label}`, process.execPath, serviceArgs(o.root), {
    cwd: o.root,
    env: {
      ...process.env,
      PORT: String(await freePort()),
      GRPC_PORT: String(grpcPort),
      DATABASE_URL: url,
      DATA_DIR: path.join(o.workDir, `data-scale-${tier.label}`),
      JWT_SECRET: o.secret,
      LOG_LEVEL: "warn",
      IN_PROCESS_CACHE_ENTRIES: "0",
    },
  });
  const client = new grpc.Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  const running: Running = { tier, dbName, url, grpcPort, service, client, admin, deepRequest: new Uint8Array(), seed: { ...seed, database } };
  onStarted(running);
  const active = toBinary(GetActiveVoiceModelRequestSchema, create(GetActiveVoiceModelRequestSchema, { userId: userName(7) }));
  await waitUntilReady(service, () => grpcCall(client, rpc("GetActiveVoiceModel"), active, o.token, 30_000));
  const check = fromBinary(GetActiveVoiceModelResponseSchema, await grpcCall(client, rpc("GetActiveVoiceModel"), active, o.token, 30_000));
  if (check.model?.userId !== userName(7) || !check.model.isActive) throw new Error(`scale check: GetActiveVoiceModel answered ${check.model?.id}`);
  let pageToken = "";
  for (let p = 1; p < DEEP_PAGE; p++) {
    const request = toBinary(ListVoiceModelsRequestSchema, create(ListVoiceModelsRequestSchema, { userId: DEEP_USER, limit: 20, pageToken }));
    pageToken = fromBinary(ListVoiceModelsResponseSchema, await grpcCall(client, rpc("ListVoiceModels"), request, o.token, 30_000)).nextPageToken;
  }
  running.deepRequest = toBinary(ListVoiceModelsRequestSchema, create(ListVoiceModelsRequestSchema, { userId: DEEP_USER, limit: 20, pageToken }));
  return running;
}

type CaseKey = "getActive" | "listFirstPage" | "deepKeysetPage" | "analyticsCold";

const GENERATORS: Record<CaseKey, (t: Tier) => string> = {
  getActive: (t) => `users-load, uniform/${t.users / 1000}k users, ${STREAMS.sessions * STREAMS.streams} streams, cache off`,
  listFirstPage: (t) => `users-load, uniform/${t.users / 1000}k users, ${STREAMS.sessions * STREAMS.streams} streams, cache off`,
  deepKeysetPage: () => `sequential grpc-js calls, page ${DEEP_PAGE} of ${DEEP_MODELS / 20} of a ${DEEP_MODELS}-model user, its cache_voice_models rows deleted before each`,
  analyticsCold: () => `sequential grpc-js calls, ${ANALYTICS.models} models x ${ANALYTICS.days} days of roll-ups, ${ANALYTICS.events / 1e6}M raw events, cache row deleted before each`,
};

/** One run of one case on one tier. */
async function runCase(o: ScaleOptions, r: Running, key: CaseKey, seconds: number): Promise<Figure> {
  if (key === "getActive" || key === "listFirstPage") {
    const body = key === "getActive" ? "active" : "list";
    const options: UsersLoadOptions = {
      port: r.grpcPort,
      path: rpc(body === "active" ? "GetActiveVoiceModel" : "ListVoiceModels"),
      body,
      token: o.token,
      users: r.tier.users,
      distribution: "uniform",
      s: 0,
      seconds,
      ...STREAMS,
    };
    const { code, stdout, stderr } = await o.procs.run("users-load", process.execPath, [...usersLoadArgs(o.root), JSON.stringify(options)]);
    if (code !== 0) throw new Error(`users-load exited ${code}: ${stderr}`);
    const result = JSON.parse(stdout.trim().split("\n").pop()!) as UsersLoadResult;
    if (result.failed > 0) throw new Error(`scale ${r.tier.label} ${key}: ${result.failed} calls failed (${result.firstError})`);
    return { rps: result.rps, p50Ms: result.p50Ms, p99Ms: result.p99Ms, generator: GENERATORS[key](r.tier), rssMb: rssMb(r.service.proc.pid) };
  }
  const times =
    key === "deepKeysetPage"
      ? await coldCalls(r.admin, `DELETE FROM cache_voice_models WHERE user_id = $1`, DEEP_USER, async () => {
          const reply = fromBinary(ListVoiceModelsResponseSchema, await grpcCall(r.client, rpc("ListVoiceModels"), r.deepRequest, o.token, 30_000));
          if (reply.models.length !== 20 || reply.total !== DEEP_MODELS) throw new Error(`scale deep page: ${reply.models.length} models, total ${reply.total}`);
        })
      : await coldCalls(r.admin, `DELETE FROM cache_voice_analytics WHERE user_id = $1`, ANALYTICS.user, async () => {
          const request = toBinary(GetVoiceModelAnalyticsRequestSchema, create(GetVoiceModelAnalyticsRequestSchema, { userId: ANALYTICS.user }));
          const a = fromBinary(GetVoiceModelAnalyticsResponseSchema, await grpcCall(r.client, rpc("GetVoiceModelAnalytics"), request, o.token, 30_000));
          if (a.totalModels !== ANALYTICS.models || Number(a.totalUsageCount) !== ANALYTICS.events) throw new Error(`scale analytics: ${a.totalModels} models, ${a.totalUsageCount} events`);
        });
  return { ...times, generator: GENERATORS[key](r.tier), rssMb: rssMb(r.service.proc.pid) };
}

/** Sequential calls, each after `invalidate` (so each one misses its cache table): p50/p99 in ms. */
async function coldCalls(admin: pg.Client, invalidate: string, userId: string, call: () => Promise<void>): Promise<{ p50Ms: number; p99Ms: number }> {
  await call(); // the plan and the connection warm
  const times = await sequentialTimes(COLD_CALLS, () => admin.query(invalidate, [userId]), call);
  return { p50Ms: percentileOf(times, 50), p99Ms: percentileOf(times, 99) };
}

async function sizeOf(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ db: string; models: string }>(
      `SELECT pg_size_pretty(pg_database_size(current_database())) AS db, pg_size_pretty(pg_total_relation_size('voice_models')) AS models`,
    );
    return `${rows[0].db} (voice_models with its indexes ${rows[0].models})`;
  } finally {
    await client.end();
  }
}

export async function runScaleBench(o: ScaleOptions): Promise<Record<string, unknown>> {
  const running: Running[] = [];
  try {
    // Both tiers are seeded first and then measured round by round, each case on 1M right before
    // 10M: the machine's speed drifts over minutes, and a ratio is only fair within a round.
    for (const tier of TIERS) await startTier(o, tier, (r) => running.push(r));
    const runs = new Map<string, Figure[]>();
    const keys: CaseKey[] = ["getActive", "listFirstPage", "deepKeysetPage", "analyticsCold"];
    for (let round = 1; round <= o.runs; round++) {
      for (const key of keys) {
        for (const r of running) {
          if (key === "analyticsCold" && !r.tier.analytics) continue;
          if (o.warmupSeconds > 0 && (key === "getActive" || key === "listFirstPage")) await runCase(o, r, key, o.warmupSeconds);
          const f = await runCase(o, r, key, o.seconds);
          runs.set(`${r.tier.label}/${key}`, [...(runs.get(`${r.tier.label}/${key}`) ?? []), f]);
          console.log(
            `  round ${round} ${r.tier.label.padEnd(4)} ${key.padEnd(15)} p50 ${f.p50Ms.toFixed(2).padStart(6)} ms  p99 ${f.p99Ms.toFixed(2).padStart(6)} ms` +
              `${f.rps ? `  ${f.rps.toFixed(0).padStart(5)} req/s` : "             "}  RSS ${f.rssMb?.toFixed(0) ?? "-"} MB  (${f.generator})`,
          );
        }
      }
    }
    const med = (label: string, key: CaseKey, p: "p50Ms" | "p99Ms") => median((runs.get(`${label}/${key}`) ?? []).map((f) => f[p]));
    const paired = (key: CaseKey, p: "p50Ms" | "p99Ms") => {
      const small = runs.get(`1M/${key}`) ?? [];
      const large = runs.get(`10M/${key}`) ?? [];
      return median(large.map((f, i) => f[p] / small[i][p]).filter(Number.isFinite));
    };
    const gates: Array<Record<string, unknown>> = [];
    console.log("\nscale: 10M against 1M, median of per-round ratios (gate: within 1.3x); analytics cold at scale (gate: p50 < 50 ms)");
    if (running.length === TIERS.length) {
      for (const key of keys.filter((k) => k !== "analyticsCold")) {
        for (const p of ["p50Ms", "p99Ms"] as const) {
          const ratio = paired(key, p);
          gates.push({ case: key, figure: p, oneM: med("1M", key, p), tenM: med("10M", key, p), ratio, target: 1.3, pass: ratio <= 1.3 });
          console.log(`  ${key.padEnd(15)} ${p.slice(0, 3)}  ${med("1M", key, p).toFixed(2).padStart(6)} -> ${med("10M", key, p).toFixed(2).padStart(6)} ms  ${ratio.toFixed(2)}x  ${ratio <= 1.3 ? "PASS" : "MISS"}`);
        }
      }
    }
    const analytics = running.find((r) => r.tier.analytics);
    if (analytics) {
      const p50 = med(analytics.tier.label, "analyticsCold", "p50Ms");
      gates.push({ case: "analyticsCold", figure: "p50Ms", value: p50, target: 50, pass: p50 < 50 });
      console.log(`  analyticsCold   p50  ${p50.toFixed(2)} ms  ${p50 < 50 ? "PASS" : "MISS"}`);
    }
    return {
      tiers: Object.fromEntries(running.map((r) => [r.tier.label, { ...r.seed, runs: Object.fromEntries(keys.map((k) => [k, runs.get(`${r.tier.label}/${k}`)])) }])),
      gates,
    };
  } finally {
    for (const r of running) {
      r.client.close();
      await r.admin.end().catch(() => undefined);
      if (r.service.proc.exitCode === null) {
        r.service.proc.kill("SIGTERM");
        await r.service.exited;
      }
      if (!o.keepDb) await dropBenchDatabase(o.adminUrl, r.dbName);
    }
  }
}
