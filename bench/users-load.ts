/**
 * A gRPC unary load generator that asks for a different user on every call (h2load sends one
 * body file). Runs as its own process: `node users-load.js '<json options>'`, prints one JSON
 * line with req/s, p50/p99 (hrtime, per call), ok/failed (by grpc-status) and its own CPU per
 * 1,000 calls. Every request frame is encoded before the clock starts (one per user), so a call
 * costs the generator a table lookup, a random draw and node:http2's own work.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import {
  ActivateVoiceModelRequestSchema,
  CreateVoiceModelRequestSchema,
  GetActiveVoiceModelRequestSchema,
  ListVoiceModelsRequestSchema,
  VoiceModelService,
} from "../gen/voicemodel/v1/voice_model_service_pb";

export type Distribution = "uniform" | "zipf";

export interface UsersLoadOptions {
  port: number;
  path: string;
  /** What each call's body is: the service's requests, or the baseline's raw user id. */
  body: "active" | "list" | "raw";
  token?: string;
  users: number;
  distribution: Distribution;
  /** Zipf exponent. */
  s: number;
  seconds: number;
  sessions: number;
  streams: number;
  /**
   * Writes mixed into GetActiveVoiceModel reads: this share of calls writes, a fifth of those
   * create a model (low score: it does not take over), the rest activate the user's other seeded
   * model. Sessions alternate over `ports` (several instances).
   */
  mix?: { writeShare: number; ports: number[]; idsFile: string };
}

export interface UsersLoadResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  ok: number;
  failed: number;
  /** CPU the generator itself spent per 1,000 calls. */
  generatorMsPer1k: number;
  /** Distinct users asked for during the run. */
  distinctUsers: number;
  firstError?: string;
  /** Mixed runs: the writes among the calls (activations refused as already active count here, not as failures). */
  writes?: { ok: number; alreadyActive: number; p50Ms: number; p99Ms: number };
}

/** The seed's user names (bench/seed.ts userName). */
const userName = (n: number) => `bench-user-${String(n).padStart(5, "0")}`;

function frame(message: Uint8Array): Buffer {
  const f = Buffer.alloc(5 + message.length);
  f.writeUInt32BE(message.length, 1);
  f.set(message, 5);
  return f;
}

/** A small seeded PRNG (mulberry32): the same user order in every run and process. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Draws user numbers. Zipf: rank k has weight 1/k^s, and ranks map to users through a fixed
 * shuffle, so the hot users are not just the lowest ids (which in the seed own the most models).
 */
export function userSampler(users: number, distribution: Distribution, s: number, random: () => number): () => number {
  if (distribution === "uniform") return () => Math.floor(random() * users);
  const cdf = new Float64Array(users);
  let sum = 0;
  for (let k = 0; k < users; k++) cdf[k] = sum += 1 / Math.pow(k + 1, s);
  for (let k = 0; k < users; k++) cdf[k] /= sum;
  const order = Uint32Array.from({ length: users }, (_, i) => i);
  const shuffle = prng(1234567);
  for (let i = users - 1; i > 0; i--) {
    const j = Math.floor(shuffle() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return () => {
    const u = random();
    let lo = 0;
    let hi = users - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return order[lo];
  };
}

function encodeFor(body: UsersLoadOptions["body"], userId: string): Uint8Array {
  if (body === "active") return toBinary(GetActiveVoiceModelRequestSchema, create(GetActiveVoiceModelRequestSchema, { userId }));
  if (body === "list") return toBinary(ListVoiceModelsRequestSchema, create(ListVoiceModelsRequestSchema, { userId, limit: 20 }));
  return Buffer.from(userId);
}

const rpc = (name: string) => `/${VoiceModelService.typeName}/${name}`;

/** Mixed runs: per user, the two seeded models' activation frames ("u,id0,id1" lines in idsFile). */
function writeFrames(idsFile: string, users: number): Buffer[][] {
  const frames: Buffer[][] = new Array(users);
  for (const line of readFileSync(idsFile, "utf8").split("\n")) {
    const [u, id0, id1] = line.split(",");
    if (!id1 || Number(u) >= users) continue;
    frames[Number(u)] = [id0, id1].map((modelId) => frame(toBinary(ActivateVoiceModelRequestSchema, create(ActivateVoiceModelRequestSchema, { modelId }))));
  }
  return frames;
}

async function run(o: UsersLoadOptions): Promise<UsersLoadResult> {
  const frames = Array.from({ length: o.users }, (_, n) => frame(encodeFor(o.body, userName(n))));
  const activations = o.mix ? writeFrames(o.mix.idsFile, o.users) : [];
  // Which seeded model the generator last made active (the seed activates model 0).
  const activeOf = new Uint8Array(o.users);
  let creates = 0;
  const writeLatencies: number[] = [];
  let writesOk = 0;
  let alreadyActive = 0;
  const draw = userSampler(o.users, o.distribution, o.s, prng(Date.now() & 0xffffffff));
  const headers: http2.OutgoingHttpHeaders = {
    ":method": "POST",
    ":path": o.path,
    "content-type": "application/grpc",
    te: "trailers",
    ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
  };
  const writeHeaders = (name: string): http2.OutgoingHttpHeaders => ({ ...headers, ":path": rpc(name) });
  const activateHeaders = writeHeaders("ActivateVoiceModel");
  const createHeaders = writeHeaders("CreateVoiceModel");
  const ports = o.mix?.ports ?? [o.port];
  const sessions = await Promise.all(
    Array.from(
      { length: o.sessions },
      (_, i) =>
        new Promise<http2.ClientHttp2Session>((resolve, reject) => {
          const session = http2.connect(`http://127.0.0.1:${ports[i % ports.length]}`);
          session.once("connect", () => resolve(session));
          session.once("error", reject);
        }),
    ),
  );
  const latencies: number[] = [];
  const seen = new Uint8Array(o.users);
  let ok = 0;
  let failed = 0;
  let firstError: string | undefined;
  let stopping = false;
  const cpuBefore = process.cpuUsage();
  const started = process.hrtime.bigint();

  const one = (session: http2.ClientHttp2Session) =>
    new Promise<void>((resolve) => {
      const user = draw();
      seen[user] = 1;
      let write: "activate" | "create" | undefined;
      let body = frames[user];
      let h = headers;
      if (o.mix && Math.random() < o.mix.writeShare) {
        if (Math.random() < 0.2) {
          write = "create";
          h = createHeaders;
          const n = creates++;
          body = frame(toBinary(CreateVoiceModelRequestSchema, create(CreateVoiceModelRequestSchema, {
            userId: userName(user), provider: "xtts-v2", modelPath: `gs://bench-models/mixed/${process.pid}-${n}.pth`, qualityScore: 0.3,
          })));
        } else {
          write = "activate";
          h = activateHeaders;
          activeOf[user] ^= 1;
          body = activations[user][activeOf[user]];
        }
      }
      const t0 = process.hrtime.bigint();
      const req = session.request(h);
      let status: string | undefined;
      let message: string | undefined;
      req.on("response", (h) => {
        // A trailers-only reply carries grpc-status in the headers.
        if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
      });
      req.on("trailers", (t) => {
        status = String(t["grpc-status"]);
        message = t["grpc-message"] as string | undefined;
      });
      req.on("data", () => {});
      req.on("error", (e) => (message = e.message));
      req.on("close", () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (write && (status === "0" || status === "6")) {
          // 6 (ALREADY_EXISTS): another stream or instance activated it first.
          if (status === "0") writesOk++;
          else alreadyActive++;
          writeLatencies.push(ms);
          ok++;
        } else if (status === "0") {
          ok++;
          latencies.push(ms);
        } else {
          failed++;
          firstError ??= `grpc-status ${status}: ${message ?? ""}`;
        }
        resolve();
      });
      req.end(body);
    });

  const loops = sessions.flatMap((session) =>
    Array.from({ length: o.streams }, async () => {
      while (!stopping) await one(session);
    }),
  );
  await new Promise((resolve) => setTimeout(resolve, o.seconds * 1000));
  stopping = true;
  const elapsedS = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpuBefore);
  const done = ok;
  await Promise.all(loops);
  sessions.forEach((s) => s.close());
  const percentile = (values: number[]) => {
    const sorted = Float64Array.from(values).sort();
    return (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] : NaN);
  };
  const pct = percentile(latencies);
  const writePct = percentile(writeLatencies);
  return {
    writes: o.mix ? { ok: writesOk, alreadyActive, p50Ms: writePct(50), p99Ms: writePct(99) } : undefined,
    rps: done / elapsedS,
    p50Ms: pct(50),
    p99Ms: pct(99),
    ok,
    failed,
    generatorMsPer1k: ((cpu.user + cpu.system) / 1000 / Math.max(1, ok + failed)) * 1000,
    distinctUsers: seen.reduce((n, v) => n + v, 0),
    firstError,
  };
}

if (require.main === module) {
  run(JSON.parse(process.argv[2]) as UsersLoadOptions).then(
    (result) => {
      process.stdout.write(`${JSON.stringify(result)}\n`);
      process.exit(0);
    },
    (error: Error) => {
      process.stderr.write(`users-load: ${error.message}\n`);
      process.exit(1);
    },
  );
}
