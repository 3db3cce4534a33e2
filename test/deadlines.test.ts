import { Code, ConnectError } from "@connectrpc/connect";
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { GrpcCallError } from "./helpers/grpc-client";
import { createModel, sleep, useTestServer, type Actor } from "./helpers/harness";
import { rawGrpcRead, uploadRandomFile, type StreamEnd } from "./helpers/raw-streams";

// The server ends calls past their deadline itself: these clients send the deadline header but
// keep no timer of their own, so only the server can end the call.
const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-deadlines-"));
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));
// A long stall timeout: what ends these streams must be the deadline.
const server = useTestServer({ env: { DATA_DIR: dataDir, STREAM_STALL_TIMEOUT_MS: "60000" } });

const FILE_BYTES = 16 * 1024 * 1024;
const READ_PATH = `/${VoiceModelService.typeName}/ReadModelFile`;
let owner: Actor;
let modelId: string;

beforeAll(async () => {
  owner = await server().actor();
  modelId = (await createModel(owner, { status: "completed", qualityScore: 0.5 })).id;
  await uploadRandomFile(server().grpcPort, owner.token, modelId, FILE_BYTES);
}, 60_000);

const rawRead = (timeout: string, pauseMs: number | "never") => rawGrpcRead(server().grpcPort, owner.token, modelId, { timeout, pauseMs }).ended;

/** ReadModelFile over raw Connect (HTTP/1.1) with `connect-timeout-ms`, reading slowly. */
function rawConnectRead(timeoutMs: number, pauseMs: number): Promise<StreamEnd & { endStream?: any }> {
  const json = Buffer.from(JSON.stringify({ modelId }));
  const envelope = Buffer.alloc(5 + json.length);
  envelope.writeUInt32BE(json.length, 1);
  json.copy(envelope, 5);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port: server().httpPort,
        method: "POST",
        path: READ_PATH,
        headers: {
          "content-type": "application/connect+json",
          "connect-protocol-version": "1",
          "connect-timeout-ms": String(timeoutMs),
          authorization: `Bearer ${owner.token}`,
        },
      },
      (res) => {
        const pieces: Buffer[] = [];
        res.on("data", (piece: Buffer) => {
          pieces.push(piece);
          res.pause();
          setTimeout(() => res.resume(), pauseMs);
        });
        const done = () => {
          const all = Buffer.concat(pieces);
          // The last envelope (flag 0x02) is the end-of-stream message, which carries the error.
          let endStream: unknown;
          for (let at = 0; at + 5 <= all.length; ) {
            const length = all.readUInt32BE(at + 1);
            if (all[at] & 0x02 && at + 5 + length <= all.length) endStream = JSON.parse(all.subarray(at + 5, at + 5 + length).toString());
            at += 5 + length;
          }
          resolve({ ms: Date.now() - started, bytes: all.length, endStream });
        };
        res.once("end", done);
        res.once("close", done);
      },
    );
    req.once("error", reject);
    req.end(envelope);
  });
}

describe("a streaming file read past its deadline is ended by the server", () => {
  test("gRPC, a slow reader: DEADLINE_EXCEEDED at the deadline, the rest of the file not sent", async () => {
    const end = await rawRead("700m", 10);
    // DEADLINE_EXCEEDED, or a reset when its trailers sat behind unsent data for two seconds
    // (grpc-js may answer the grpc-timeout itself, a moment before the service does).
    expect(end.grpcStatus === String(Code.DeadlineExceeded) || (end.rstCode ?? 0) !== 0).toBe(true);
    expect(end.ms).toBeLessThan(4_000);
    expect(end.bytes).toBeLessThan(FILE_BYTES / 2);
  });

  test("gRPC, a reader that never opens its window: the stream is reset at the deadline", async () => {
    const end = await rawRead("700m", "never");
    expect(end.ms).toBeLessThan(4_000);
    expect(end.grpcStatus === String(Code.DeadlineExceeded) || (end.rstCode ?? 0) !== 0).toBe(true);
  });

  test("Connect, a slow reader: the stream ends with deadline_exceeded at connect-timeout-ms", async () => {
    const started = Date.now();
    const end = await rawConnectRead(700, 20);
    expect(end.endStream?.error?.code).toBe("deadline_exceeded");
    // When the server ended it (the kernel's socket buffers, several MB on loopback, take the
    // slow reader a while longer to get through).
    const endedAt = Date.parse(end.endStream.error.details[0].debug.metadata.timestamp);
    expect(endedAt - started).toBeLessThan(2_000);
    // Base64 in JSON: the whole file would be 4/3 of its size.
    expect(end.bytes).toBeLessThan(FILE_BYTES / 2);
  });
});

/** How many calls of a method the server counted under a code label. */
async function counted(method: string, code: string): Promise<number> {
  const { text } = await server().fetch("/metrics");
  const line = text.split("\n").find((l) => l.startsWith(`voice_model_rpc_errors_total{method="${method}",code="${code}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

async function until(condition: () => Promise<boolean>, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(50);
  }
}

describe.each(["grpc", "connect"] as const)("a write whose deadline passes before commit is rolled back (%s)", (transport) => {
  test("UpdateVoiceModel blocked past its deadline changes nothing, and is counted as CLIENT_DEADLINE", async () => {
    const model = await createModel(owner, { qualityScore: 0.25 });
    const before = await counted("updateVoiceModel", "CLIENT_DEADLINE");
    // Holding the row (on PGlite: the one connection) keeps the update from committing in time.
    const trx = await server().db.knex.transaction();
    await trx.raw("select id from voice_models where id = ? for update", [model.id]);
    const request = { modelId: model.id, userId: owner.userId, qualityScore: 0.9 };
    const call =
      transport === "grpc"
        ? owner.grpc.updateVoiceModel(request, { deadlineMs: 300 }).then(
            () => 0,
            (e: GrpcCallError) => e.code,
          )
        : owner.connect.updateVoiceModel(request, { timeoutMs: 300 }).then(
            () => 0,
            (e: unknown) => ConnectError.from(e).code,
          );
    expect(await call).toBe(Code.DeadlineExceeded);
    await sleep(200);
    await trx.commit();
    // The server's own call has run to its end once it is counted.
    await until(async () => (await counted("updateVoiceModel", "CLIENT_DEADLINE")) > before);
    const { message } = await owner.grpc.getVoiceModel({ modelId: model.id });
    expect(message.model!.qualityScore).toBeCloseTo(0.25);
  });

  test("a write that commits before its deadline is kept", async () => {
    const model = await createModel(owner, { qualityScore: 0.25 });
    const request = { modelId: model.id, userId: owner.userId, qualityScore: 0.75 };
    if (transport === "grpc") await owner.grpc.updateVoiceModel(request, { deadlineMs: 5_000 });
    else await owner.connect.updateVoiceModel(request, { timeoutMs: 5_000 });
    const { message } = await owner.grpc.getVoiceModel({ modelId: model.id });
    expect(message.model!.qualityScore).toBeCloseTo(0.75);
  });
});
