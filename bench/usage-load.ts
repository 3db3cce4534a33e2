/**
 * Load generator for RecordUsageBatch, run as its own process by bench/usage-cases.ts: CONCURRENCY
 * grpc-js calls in flight, each a batch of BATCH events with fresh idempotency keys, for SECONDS.
 * Prints one JSON line: { calls, events, failed, eventsPerSecond, callsPerSecond, p50Ms, p99Ms }.
 * (h2load cannot do this: it repeats one body, and repeated keys are duplicates, not new events.)
 */
import { create, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import { RecordUsageBatchRequestSchema } from "../gen/voicemodel/v1/usage_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";

const env = (name: string) => {
  const v = process.env[name];
  if (!v) throw new Error(`usage-load: ${name} is required`);
  return v;
};

const target = env("TARGET");
const token = env("TOKEN");
const userId = env("USER_ID");
const modelIds = env("MODEL_IDS").split(",");
const seconds = Number(env("SECONDS"));
const concurrency = Number(process.env.CONCURRENCY ?? "4");
const batch = Number(process.env.BATCH ?? "1000");
const method = `/${VoiceModelService.typeName}/RecordUsageBatch`;
const run = randomBytes(4).toString("hex");
let sequence = 0;

function body(): Buffer {
  const events = Array.from({ length: batch }, (_, i) => ({
    modelId: modelIds[(sequence + i) % modelIds.length],
    userId,
    characters: 200n,
    latencyMs: 100 + (i % 300),
    cost: 0.0004,
    idempotencyKey: `bench-${run}-${sequence++}`,
  }));
  return Buffer.from(toBinary(RecordUsageBatchRequestSchema, create(RecordUsageBatchRequestSchema, { events })));
}

async function main() {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const call = (request: Buffer) =>
    new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest(method, (b: Buffer) => b, (b: Buffer) => b, request, metadata, { deadline: Date.now() + 30_000 }, (error) =>
        error ? reject(error) : resolve(),
      ),
    );
  const latencies: number[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const end = Date.now() + seconds * 1000;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) {
        const request = body();
        const t0 = performance.now();
        try {
          await call(request);
          latencies.push(performance.now() - t0);
        } catch (error) {
          failed++;
          firstError ??= (error as Error).message;
        }
      }
    }),
  );
  const elapsed = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] ?? NaN;
  client.close();
  process.stdout.write(
    JSON.stringify({
      calls: latencies.length,
      events: latencies.length * batch,
      failed,
      firstError,
      eventsPerSecond: (latencies.length * batch) / elapsed,
      callsPerSecond: latencies.length / elapsed,
      p50Ms: pct(50),
      p99Ms: pct(99),
    }) + "\n",
  );
}

main().catch((error: Error) => {
  process.stderr.write(`usage-load: ${error.stack}\n`);
  process.exit(1);
});
