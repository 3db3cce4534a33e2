import { readFileSync, rmSync } from "node:fs";
import path from "node:path";
import type { Processes } from "./processes";

/** One load run as measured by the load generator. */
export interface LoadResult {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** Requests that completed with HTTP 2xx (for gRPC that says nothing of grpc-status). */
  ok: number;
  /** Requests the generator counted as failed: non-2xx, errors, timeouts. */
  failed: number;
  /** gRPC only: the DATA bytes received match `ok` replies of the checked size (see h2load()). */
  bodiesMatch?: boolean;
  note?: string;
}

/** A gRPC length-prefixed message: flag byte 0 (uncompressed), 4-byte big-endian length, bytes. */
export function grpcFrame(message: Uint8Array): Buffer {
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  return frame;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

function num(text: string, re: RegExp, what: string): number {
  const m = re.exec(text);
  if (!m) throw new Error(`h2load output has no ${what}:\n${text}`);
  return Number(m[1]);
}

export interface H2loadOptions {
  url: string;
  /** Request body file (for gRPC: one grpcFrame). */
  bodyFile: string;
  headers: Record<string, string>;
  seconds: number;
  clients: number;
  streamsPerClient: number;
  /** --h1: HTTP/1.1, one request in flight per connection. */
  http1?: boolean;
  /** gRPC: the size of one reply's DATA (5 + message bytes), as seen by the checking client. */
  replyFrameBytes?: number;
  workDir: string;
}

/**
 * Runs h2load once. Throughput is h2load's own req/s; p50/p99 come from its per-request log
 * (microseconds). h2load does not read grpc-status, so for gRPC the received DATA bytes are
 * compared with `ok` replies of the size the checking client saw: an error reply (trailers only)
 * carries no DATA, so any failed call shows up as missing bytes.
 */
export async function h2load(procs: Processes, o: H2loadOptions): Promise<LoadResult> {
  const logFile = path.join(o.workDir, `h2load-${process.pid}-${Date.now()}.log`);
  const args = [
    `--duration=${o.seconds}`,
    `--log-file=${logFile}`,
    `--clients=${o.clients}`,
    `--max-concurrent-streams=${o.streamsPerClient}`,
    "--threads=1",
    `--data=${o.bodyFile}`,
    ...Object.entries(o.headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
    ...(o.http1 ? ["--h1"] : []),
    o.url,
  ];
  const { code, stdout, stderr } = await procs.run("h2load", "h2load", args);
  if (code !== 0) throw new Error(`h2load exited ${code}: ${stderr}\n${stdout}`);

  const rps = num(stdout, /finished in [\d.]+\w+, ([\d.]+) req\/s/, "req/s");
  const succeeded = num(stdout, /(\d+) succeeded/, "succeeded count");
  const failed = num(stdout, /(\d+) failed/, "failed count");
  const errored = num(stdout, /(\d+) errored/, "errored count");
  const timeout = num(stdout, /(\d+) timeout/, "timeout count");
  const non2xx = [3, 4, 5].reduce((n, c) => n + num(stdout, new RegExp(`(\\d+) ${c}xx`), `${c}xx count`), 0);
  const dataBytes = num(stdout, /\((\d+)\) data/, "data bytes");

  const lines = readFileSync(logFile, "utf8").split("\n");
  rmSync(logFile, { force: true });
  const micros: number[] = [];
  for (const line of lines) {
    const cols = line.split("\t");
    if (cols.length >= 3 && cols[1].startsWith("2")) micros.push(Number(cols[2]));
  }
  const sorted = Float64Array.from(micros).sort();

  const result: LoadResult = {
    rps,
    p50Ms: percentile(sorted, 50) / 1000,
    p99Ms: percentile(sorted, 99) / 1000,
    ok: succeeded,
    failed: failed + errored + timeout + non2xx,
  };
  if (o.replyFrameBytes !== undefined) {
    // Replies still arriving when the clock stops may be counted in bytes but not as done:
    // allow up to one reply per stream in flight.
    const replies = dataBytes / o.replyFrameBytes;
    const inFlight = o.clients * o.streamsPerClient;
    result.bodiesMatch = replies >= result.ok && replies <= result.ok + inFlight;
    if (!result.bodiesMatch) {
      result.note = `DATA bytes ${dataBytes} = ${replies.toFixed(1)} replies of ${o.replyFrameBytes} B, but ${result.ok} succeeded`;
    }
  }
  return result;
}

export interface AutocannonOptions {
  url: string;
  body: string;
  headers: Record<string, string>;
  seconds: number;
  connections: number;
}

const AUTOCANNON = path.join(path.dirname(require.resolve("autocannon/package.json")), "autocannon.js");

/** Runs autocannon (its own Node process) once; 2xx responses are the successes. */
export async function autocannon(procs: Processes, o: AutocannonOptions): Promise<LoadResult> {
  const args = [
    AUTOCANNON,
    "--json",
    "--no-progress",
    `--connections=${o.connections}`,
    `--duration=${o.seconds}`,
    "--method=POST",
    `--body=${o.body}`,
    ...Object.entries(o.headers).flatMap(([k, v]) => ["--headers", `${k}=${v}`]),
    o.url,
  ];
  const { code, stdout, stderr } = await procs.run("autocannon", process.execPath, args);
  if (code !== 0) throw new Error(`autocannon exited ${code}: ${stderr}`);
  const r = JSON.parse(stdout.trim().split("\n").pop()!) as {
    requests: { average: number };
    latency: { p50: number; p99: number };
    duration: number;
    "2xx": number;
    non2xx: number;
    errors: number;
    timeouts: number;
    mismatches: number;
  };
  return {
    rps: r["2xx"] / r.duration,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    ok: r["2xx"],
    failed: r.non2xx + r.errors + r.timeouts + r.mismatches,
    note: "autocannon latencies have 1 ms resolution",
  };
}

/** The p-th percentile (nearest rank) of unsorted values; NaN for none. */
/** Durations (ms) of `count` calls one after another, each after `before()` (e.g. a cache row deleted). */
export async function sequentialTimes(count: number, before: () => Promise<unknown>, call: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    await before();
    const t0 = performance.now();
    await call();
    times.push(performance.now() - t0);
  }
  return times;
}

export function percentileOf(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
