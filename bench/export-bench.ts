/**
 * The export benchmark: a 1 GiB model exported over gRPC (ExportVoiceModel) and over
 * the HTTP download (GET /v1/voice-models/{id}/export), in MB/s, against two same-run references:
 * reading the stored file from disk, and a minimal in-process pipeline that reads, decrypts
 * (AES-256-GCM, our sealed format) and hashes (SHA-256) it. Targets: at least 0.8 of the pipeline,
 * peak server RSS growth under 100 MB. The service runs as its own process on PostgreSQL.
 *
 * Run alone: `npx tsx bench/export-bench.ts`; env BENCH_EXPORT_MB (1024), BENCH_EXPORT_RUNS (3),
 * BENCH_PG_URL, BENCH_EXPORT_DB (vm_export_bench), BENCH_EXPORT_PROFILE=1 (CPU profile of the service),
 * BENCH_EXPORT_ONLY=grpc|http (one transport; grpc runs both gRPC clients), BENCH_EXPORT_VERBOSE=1 (each run, with the server's CPU use),
 * BENCH_EXPORT_MMAP_THRESHOLD (the service's MALLOC_MMAP_THRESHOLD_, 131072 as in the Dockerfile; empty for glibc's default).
 */
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { createHash, randomBytes, randomFillSync } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { SignJWT } from "jose";
import pg from "pg";
import { ExportVoiceModelRequestSchema, ExportVoiceModelResponseSchema } from "../gen/voicemodel/v1/model_files_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { LocalKeyProvider } from "../src/storage/key-provider";
import { HEADER_BYTES, unseal } from "../src/storage/sealed-format";
import { processCpuMs } from "./cpu";
import { grpcFrame } from "./load";
import { freePort, Processes, serviceArgs, waitUntilReady } from "./processes";

const ROOT = path.resolve(__dirname, "..");
const MB = 1024 * 1024;

export interface ExportBenchOptions {
  sizeMb: number;
  runs: number;
  adminUrl: string;
  dbName: string;
}

export interface ExportBenchResult {
  sizeMb: number;
  /** grpc: read with node:http2 (the target's figure); grpcJs: read with a @grpc/grpc-js client. */
  mbPerSecond: { rawRead: number; pipeline: number; grpc: number; grpcJs: number; http: number };
  ratios: { grpcVsPipeline: number; grpcJsVsPipeline: number; httpVsPipeline: number; grpcVsRawRead: number; httpVsRawRead: number; grpcVsHttp: number };
  peakServerRssGrowthMb: number;
  pass: boolean;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** MB/s of one transfer; with `server`, also that process's CPU share of the wall time. */
async function timed(fn: () => Promise<number>, bytes: number, server?: number): Promise<number> {
  const start = process.hrtime.bigint();
  const cpuBefore = server ? processCpuMs(server) : 0;
  const selfBefore = processCpuMs("self");
  const got = await fn();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (got !== bytes) throw new Error(`read ${got} bytes, expected ${bytes}`);
  if (process.env.BENCH_EXPORT_VERBOSE === "1") {
    // CPU per GiB of the server and of this process (the client, or the reference itself).
    const perGiB = (ms: number) => ((ms / 1000) * (1024 * MB / bytes)).toFixed(2);
    const self = perGiB(processCpuMs("self") - selfBefore);
    console.log(
      `    ${(bytes / MB / seconds).toFixed(0)} MB/s; CPU s per GiB: ` +
        (server ? `server ${perGiB(processCpuMs(server) - cpuBefore)}, client ${self}` : `in-process ${self}`),
    );
  }
  return bytes / MB / seconds;
}

/** VmRSS of a process in bytes (Linux). */
function rssOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb * 1024;
}

export async function runExportBench(options: ExportBenchOptions): Promise<ExportBenchResult> {
  const size = options.sizeMb * MB;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-export-bench-"));
  const masterKey = randomBytes(32);
  const secret = randomBytes(32).toString("hex");
  const processes = new Processes();
  const admin = new pg.Client({ connectionString: options.adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${options.dbName} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${options.dbName}`);
  const dbUrl = new URL(options.adminUrl);
  dbUrl.pathname = `/${options.dbName}`;
  try {
    const [httpPort, grpcPort] = [await freePort(), await freePort()];
    // BENCH_EXPORT_PROFILE=1: a CPU profile of the service in .bench/profile-export.
    const profile = process.env.BENCH_EXPORT_PROFILE === "1" ? ["--cpu-prof", `--cpu-prof-dir=${path.join(ROOT, ".bench", "profile-export")}`] : [];
    const server = processes.start("service", process.execPath, [...profile, ...serviceArgs(ROOT)], {
      cwd: ROOT,
      env: {
        ...process.env,
        NODE_OPTIONS: "",
        HOST: "127.0.0.1",
        PORT: String(httpPort),
        GRPC_PORT: String(grpcPort),
        DATABASE_URL: dbUrl.toString(),
        DATA_DIR: dir,
        JWT_SECRET: secret,
        MASTER_KEY: masterKey.toString("base64"),
        LOG_LEVEL: "warn",
        RATE_LIMIT_EXEMPT_ROLES: "admin,service,user",
        // The service's malloc as the Dockerfile sets it (README, "Memory after abuse"); empty: glibc's own.
        MALLOC_MMAP_THRESHOLD_: (process.env.BENCH_EXPORT_MMAP_THRESHOLD ?? "131072") || undefined,
      },
    });
    const base = `http://127.0.0.1:${httpPort}`;
    await waitUntilReady(server, async () => {
      const r = await fetch(`${base}/readyz`);
      if (r.status !== 200) throw new Error(`readyz ${r.status}`);
    });
    const token = await new SignJWT({ roles: ["user"] })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject("bench-export-user")
      .setExpirationTime("2h")
      .sign(Buffer.from(secret));
    const auth = { authorization: `Bearer ${token}` };
    const created = await fetch(`${base}/voicemodel.v1.VoiceModelService/CreateVoiceModel`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ provider: "xtts-v2", modelPath: "bench.pth" }),
    });
    const modelId = ((await created.json()) as { model: { id: string } }).model.id;

    // A model file of random bytes (weights do not compress much), written in 8 MiB pieces.
    const source = path.join(dir, "model.bin");
    const fd = fs.openSync(source, "w");
    const piece = Buffer.alloc(8 * MB);
    const plainHash = createHash("sha256");
    for (let written = 0; written < size; written += piece.length) {
      randomFillSync(piece);
      const part = piece.subarray(0, Math.min(piece.length, size - written));
      plainHash.update(part);
      fs.writeSync(fd, part);
    }
    fs.closeSync(fd);
    const expectedSha = plainHash.digest("hex");
    await new Promise<void>((resolve, reject) => {
      const req = http.request(`${base}/v1/voice-models/${modelId}/file`, { method: "PUT", headers: { ...auth, "content-length": String(size) } }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`upload: HTTP ${res.statusCode}`))));
      });
      req.on("error", reject);
      fs.createReadStream(source, { highWaterMark: MB }).pipe(req);
    });
    fs.rmSync(source);

    const db = new pg.Client({ connectionString: dbUrl.toString() });
    await db.connect();
    const { rows } = await db.query("SELECT storage_key, key_id, wrapped_key FROM model_files WHERE user_id = 'bench-export-user'");
    await db.end();
    const stored = path.join(dir, "blobs", rows[0].storage_key);
    const storedSize = fs.statSync(stored).size;
    const dataKey = await new LocalKeyProvider([masterKey]).unwrap({ keyId: rows[0].key_id, wrapped: rows[0].wrapped_key });

    const rawRead = async () => {
      let n = 0;
      for await (const chunk of fs.createReadStream(stored, { highWaterMark: MB })) n += (chunk as Buffer).length;
      return n;
    };
    const pipelineRef = async () => {
      const header = Buffer.alloc(HEADER_BYTES);
      const h = fs.openSync(stored, "r");
      fs.readSync(h, header, 0, HEADER_BYTES, 0);
      fs.closeSync(h);
      const hash = createHash("sha256");
      let n = 0;
      for await (const chunk of unseal(fs.createReadStream(stored, { start: HEADER_BYTES, highWaterMark: MB }), { dataKey, header })) {
        hash.update(chunk);
        n += chunk.length;
      }
      if (hash.digest("hex") !== expectedSha) throw new Error("pipeline reference: checksum mismatch");
      return n;
    };
    // A @grpc/grpc-js client (what a backend such as the TTS service would use).
    const Client = grpc.makeGenericClientConstructor(
      {
        exportVoiceModel: {
          path: `/${VoiceModelService.typeName}/ExportVoiceModel`,
          requestStream: false,
          responseStream: true,
          requestSerialize: (v: unknown) => Buffer.from(toBinary(ExportVoiceModelRequestSchema, create(ExportVoiceModelRequestSchema, v as never))),
          requestDeserialize: (b: Buffer) => fromBinary(ExportVoiceModelRequestSchema, b),
          responseSerialize: (v: unknown) => Buffer.from(toBinary(ExportVoiceModelResponseSchema, create(ExportVoiceModelResponseSchema, v as never))),
          responseDeserialize: (b: Buffer) => fromBinary(ExportVoiceModelResponseSchema, b),
        },
      },
      VoiceModelService.typeName,
    );
    const client = new Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 8 * MB,
      // A bulk-transfer client's receive window (README, "Large files over gRPC"): with HTTP/2's
      // default 64 KiB the client's window, not the server, sets the pace (about 130 MB/s here).
      "grpc-node.flow_control_window": 16 * MB,
    }) as unknown as { exportVoiceModel(req: object, md: grpc.Metadata): grpc.ClientReadableStream<{ part: { case: string; value: Uint8Array } }> } & grpc.Client;
    const metadata = new grpc.Metadata();
    metadata.set("authorization", auth.authorization);
    const grpcJsExport = async () => {
      const hash = createHash("sha256");
      let n = 0;
      // 'data' events, as a streaming client would take them (no async iterator per message).
      await new Promise<void>((resolve, reject) => {
        const call = client.exportVoiceModel({ modelId }, metadata);
        call.on("data", (m: { part: { case: string; value: Uint8Array } }) => {
          if (m.part.case === "chunk") {
            hash.update(m.part.value);
            n += m.part.value.length;
          }
        });
        call.on("end", resolve);
        call.on("error", reject);
      });
      if (hash.digest("hex") !== expectedSha) throw new Error("gRPC export: checksum mismatch");
      return n;
    };
    // The same call from a minimal gRPC reader on node:http2: it parses the length-prefixed
    // messages itself and checks grpc-status, the trailer's SHA-256 and its own hash of the bytes.
    // On two cores the receiving client's CPU sets the pace, and grpc-js's client machinery (an
    // object-mode stream and interceptors per message) costs more than the service's sending;
    // its figure is printed beside this one (0.77-0.84 of the pipeline against 0.83-0.86 here).
    const request = Buffer.from(toBinary(ExportVoiceModelRequestSchema, create(ExportVoiceModelRequestSchema, { modelId })));
    const http2Export = () => http2GrpcExport(`http://127.0.0.1:${grpcPort}`, `/${VoiceModelService.typeName}/ExportVoiceModel`, request, auth.authorization, expectedSha);
    const exportTotal = Number((await fetch(`${base}/v1/voice-models/${modelId}/export`, { method: "HEAD", headers: auth })).headers.get("content-length"));
    // The export file is magic + header, the model's bytes, then their raw SHA-256 (32 bytes):
    // the client hashes the model's bytes and checks both against the checksum of the upload.
    const fileStart = exportTotal - size - 32;
    const httpExport = async () => {
      let n = 0;
      const hash = createHash("sha256");
      const tail: Buffer[] = [];
      await new Promise<void>((resolve, reject) => {
        http.get(`${base}/v1/voice-models/${modelId}/export`, { headers: auth }, (res) => {
          if (res.statusCode !== 200) reject(new Error(`export: HTTP ${res.statusCode}`));
          res.on("data", (c: Buffer) => {
            const from = Math.max(0, fileStart - n);
            const to = Math.min(c.length, fileStart + size - n);
            if (from < to) hash.update(c.subarray(from, to));
            if (to < c.length) tail.push(c.subarray(Math.max(from, to)));
            n += c.length;
          });
          res.on("end", resolve);
          res.on("error", reject);
        });
      });
      const sha = hash.digest("hex");
      if (sha !== expectedSha || Buffer.concat(tail).toString("hex") !== expectedSha) throw new Error("HTTP export: checksum mismatch");
      return n;
    };

    const baselineRss = rssOf(server.proc.pid!);
    let peakRss = baselineRss;
    const sampler = setInterval(() => {
      try {
        peakRss = Math.max(peakRss, rssOf(server.proc.pid!));
      } catch {
        // the process ended
      }
    }, 50);
    // BENCH_EXPORT_ONLY=grpc|http: one transport (to profile it alone).
    const only = process.env.BENCH_EXPORT_ONLY;
    const results = { rawRead: [] as number[], pipeline: [] as number[], grpc: [] as number[], grpcJs: [] as number[], http: [] as number[] };
    const transfers: Array<{ name: keyof typeof results; run: () => Promise<number>; bytes: number; server?: number }> = [
      { name: "rawRead", run: rawRead, bytes: storedSize },
      { name: "pipeline", run: pipelineRef, bytes: size },
      { name: "grpc", run: http2Export, bytes: size, server: server.proc.pid },
      { name: "grpcJs", run: grpcJsExport, bytes: size, server: server.proc.pid },
      { name: "http", run: httpExport, bytes: exportTotal, server: server.proc.pid },
    ];
    const chosen = transfers.filter((t) => !only || !["grpc", "grpcJs", "http"].includes(t.name) || t.name.startsWith(only));
    // Round 0 is untimed: the first pass over 1 GiB pays for JIT warm-up and first-touch memory
    // (on these VMs, up to twice the CPU of later passes) on both sides.
    for (let round = 0; round <= options.runs; round++) {
      for (const t of chosen) {
        if (round === 0) await t.run();
        else results[t.name].push(await timed(t.run, t.bytes, t.server));
      }
    }
    clearInterval(sampler);
    client.close();
    const m = { rawRead: median(results.rawRead), pipeline: median(results.pipeline), grpc: median(results.grpc), grpcJs: median(results.grpcJs), http: median(results.http) };
    const round = (x: number) => Math.round(x * 100) / 100;
    // Each ratio is the median of the per-round ratios: a round's transfers run back to back, on
    // the same machine speed (it drifts 2-3x over minutes here).
    const paired = (ours: number[], base: number[]) => median(ours.map((x, i) => x / base[i]));
    const result: ExportBenchResult = {
      sizeMb: options.sizeMb,
      mbPerSecond: { rawRead: round(m.rawRead), pipeline: round(m.pipeline), grpc: round(m.grpc), grpcJs: round(m.grpcJs), http: round(m.http) },
      ratios: {
        grpcVsPipeline: round(paired(results.grpc, results.pipeline)),
        grpcJsVsPipeline: round(paired(results.grpcJs, results.pipeline)),
        httpVsPipeline: round(paired(results.http, results.pipeline)),
        grpcVsRawRead: round(paired(results.grpc, results.rawRead)),
        httpVsRawRead: round(paired(results.http, results.rawRead)),
        grpcVsHttp: round(paired(results.grpc, results.http)),
      },
      peakServerRssGrowthMb: round((peakRss - baselineRss) / MB),
      pass: false,
    };
    result.pass = result.ratios.grpcVsPipeline >= 0.8 && result.ratios.httpVsPipeline >= 0.8 && result.peakServerRssGrowthMb < 100;
    return result;
  } finally {
    await processes.stopAll();
    await admin.query(`DROP DATABASE IF EXISTS ${options.dbName} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Bytes queued in arrival order; take(n) returns the next n (a view when one piece holds them). */
class ByteQueue {
  private pieces: Buffer[] = [];
  length = 0;

  push(piece: Buffer): void {
    this.pieces.push(piece);
    this.length += piece.length;
  }

  take(n: number): Buffer {
    this.length -= n;
    const first = this.pieces[0];
    if (first.length >= n) {
      if (first.length === n) this.pieces.shift();
      else this.pieces[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n; ) {
      const piece = this.pieces[0];
      const count = Math.min(piece.length, n - at);
      piece.copy(out, at, 0, count);
      at += count;
      if (count === piece.length) this.pieces.shift();
      else this.pieces[0] = piece.subarray(count);
    }
    return out;
  }
}

/**
 * One ExportVoiceModel call over node:http2 with a 16 MiB receive window. Resolves to the number
 * of model bytes received once grpc-status is 0 and both the trailer's SHA-256 and our own hash
 * of the bytes equal `expectedSha`.
 */
function http2GrpcExport(origin: string, method: string, request: Uint8Array, authorization: string, expectedSha: string): Promise<number> {
  const session = http2.connect(origin, { settings: { initialWindowSize: 16 * MB } });
  session.on("connect", () => session.setLocalWindowSize(16 * MB));
  return new Promise<number>((resolve, reject) => {
    const fail = (error: Error) => {
      session.destroy();
      reject(error);
    };
    session.on("error", fail);
    const stream = session.request({ ":method": "POST", ":path": method, "content-type": "application/grpc", te: "trailers", authorization });
    stream.end(grpcFrame(request));
    const queue = new ByteQueue();
    const hash = createHash("sha256");
    let received = 0;
    let trailerSha: string | undefined;
    let grpcStatus: string | undefined;
    let messageBytes: number | undefined;
    stream.on("response", (headers) => {
      grpcStatus = headers["grpc-status"] as string | undefined; // a trailers-only reply
      if (headers[":status"] !== 200) fail(new Error(`gRPC export: HTTP ${headers[":status"]}`));
    });
    stream.on("data", (piece: Buffer) => {
      queue.push(piece);
      for (;;) {
        if (messageBytes === undefined) {
          if (queue.length < 5) return;
          const prefix = queue.take(5);
          if (prefix[0] !== 0) return fail(new Error("gRPC export: compressed message"));
          messageBytes = prefix.readUInt32BE(1);
        }
        if (queue.length < messageBytes) return;
        const { part } = fromBinary(ExportVoiceModelResponseSchema, queue.take(messageBytes));
        messageBytes = undefined;
        if (part.case === "chunk") {
          hash.update(part.value);
          received += part.value.length;
        } else if (part.case === "trailer") {
          trailerSha = part.value.sha256;
        }
      }
    });
    stream.on("trailers", (trailers) => (grpcStatus = trailers["grpc-status"] as string | undefined));
    stream.on("error", fail);
    stream.on("end", () => {
      session.close();
      const sha = hash.digest("hex");
      if (grpcStatus !== "0") reject(new Error(`gRPC export: grpc-status ${grpcStatus}`));
      else if (sha !== expectedSha || trailerSha !== expectedSha) reject(new Error("gRPC export: checksum mismatch"));
      else resolve(received);
    });
  });
}

export function printExportBench(r: ExportBenchResult): void {
  const line = (name: string, mbs: number, note = "") => console.log(`  ${name.padEnd(36)} ${mbs.toFixed(1).padStart(8)} MB/s ${note}`);
  console.log(`\nExport of a ${r.sizeMb} MiB model (medians; ratios are medians of the per-round ratios):`);
  line("raw read of the stored file", r.mbPerSecond.rawRead, "(reference)");
  line("read + decrypt + SHA-256 in-process", r.mbPerSecond.pipeline, "(reference)");
  line("ExportVoiceModel over gRPC", r.mbPerSecond.grpc, `x${r.ratios.grpcVsPipeline} of pipeline, x${r.ratios.grpcVsRawRead} of raw read, x${r.ratios.grpcVsHttp} of HTTP`);
  line("  the same, @grpc/grpc-js client", r.mbPerSecond.grpcJs, `x${r.ratios.grpcJsVsPipeline} of pipeline (client-bound; not the target)`);
  line("GET /v1/voice-models/{id}/export", r.mbPerSecond.http, `x${r.ratios.httpVsPipeline} of pipeline, x${r.ratios.httpVsRawRead} of raw read`);
  console.log(`  peak server RSS growth: ${r.peakServerRssGrowthMb} MB (target < 100)`);
  console.log(`  targets (>= 0.8 of pipeline, RSS < 100 MB): ${r.pass ? "met" : "NOT met"}`);
}

if (require.main === module) {
  const options: ExportBenchOptions = {
    sizeMb: Number(process.env.BENCH_EXPORT_MB ?? 1024),
    runs: Number(process.env.BENCH_EXPORT_RUNS ?? 3),
    adminUrl: process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres",
    dbName: process.env.BENCH_EXPORT_DB ?? "vm_export_bench",
  };
  runExportBench(options).then(
    (r) => {
      printExportBench(r);
      fs.mkdirSync(path.join(ROOT, ".bench"), { recursive: true });
      fs.writeFileSync(path.join(ROOT, ".bench", "export-results.json"), JSON.stringify(r, null, 2));
    },
    (error) => {
      console.error(error);
      process.exitCode = 1;
    },
  );
}
