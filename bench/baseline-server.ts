import * as grpc from "@grpc/grpc-js";
import pg from "pg";

/**
 * The baselines: a bare @grpc/grpc-js server with one unary method and raw-bytes (identity)
 * serializers. BASELINE_MODE=noop replies an empty message at once (a); BASELINE_MODE=select runs
 * one primary-key SELECT (the request bytes are the model id) with a pg pool of 10 and replies
 * the row's id (f). Env: PORT, BASELINE_MODE, DATABASE_URL (select).
 */
export const BASELINE_PATH = "/bench.v1.Baseline/Call";

const identity = (bytes: Buffer) => bytes;

const definition: grpc.ServiceDefinition = {
  Call: {
    path: BASELINE_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: "call",
  },
};

const EMPTY = Buffer.alloc(0);

function main() {
  const mode = process.env.BASELINE_MODE;
  const port = Number(process.env.PORT);
  let pool: pg.Pool | undefined;
  let call: grpc.handleUnaryCall<Buffer, Buffer>;
  if (mode === "noop") {
    call = (_call, callback) => callback(null, EMPTY);
  } else if (mode === "select") {
    const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
    pool = db;
    const query = { name: "model-by-id", text: "SELECT * FROM voice_models WHERE id = $1" };
    call = (c, callback) => {
      db.query({ ...query, values: [c.request.toString("utf8")] }).then(
        ({ rows }) =>
          rows.length
            ? callback(null, Buffer.from(rows[0].id as string))
            : callback({ code: grpc.status.NOT_FOUND, details: "no such model" }),
        (error: Error) => callback({ code: grpc.status.INTERNAL, details: error.message }),
      );
    };
  } else {
    throw new Error(`BASELINE_MODE must be noop or select, got ${mode}`);
  }

  // The service's own server options (channelz off), so the ratios compare our code, not settings.
  const server = new grpc.Server({ "grpc.enable_channelz": 0 });
  server.addService(definition, { Call: call });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error) => {
    if (error) {
      process.stderr.write(`baseline: ${error.message}\n`);
      process.exit(1);
    }
  });
  const stop = () => {
    server.forceShutdown();
    void (pool?.end() ?? Promise.resolve()).finally(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (require.main === module) main();
