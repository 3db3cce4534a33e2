import * as grpc from "@grpc/grpc-js";
import pg from "pg";

/**
 * The baselines: a bare @grpc/grpc-js server with one unary method and raw-bytes (identity)
 * serializers. BASELINE_MODE=noop replies an empty message at once (a); BASELINE_MODE=select runs
 * one primary-key SELECT (the request bytes are the model id) with a pg pool of 10 and replies
 * the row's id (f). The many-users cases run the service's own SQL for a user whose id is the
 * request bytes: BASELINE_MODE=active finds the active model through the partial unique index on
 * the user id (GetActiveVoiceModel), BASELINE_MODE=list reads a page of 20 and counts the user's
 * live models, both in parallel as the service does (ListVoiceModels limit 20). Like the service,
 * these send unnamed statements (the pg driver's default). Env: PORT, BASELINE_MODE, DATABASE_URL.
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
  } else if (mode === "active") {
    const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
    pool = db;
    const text = `select "voice_models".* from "voice_models" where "user_id" = $1 and "is_active" = $2 and "deleted_at" is null`;
    call = (c, callback) => {
      db.query(text, [c.request.toString("utf8"), true]).then(
        ({ rows }) =>
          rows.length
            ? callback(null, Buffer.from(rows[0].id as string))
            : callback({ code: grpc.status.NOT_FOUND, details: "no active model" }),
        (error: Error) => callback({ code: grpc.status.INTERNAL, details: error.message }),
      );
    };
  } else if (mode === "list") {
    const db = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
    pool = db;
    const page = `select "voice_models".* from "voice_models" where "user_id" = $1 and "deleted_at" is null
      order by "is_active" desc, "quality_score" desc, "created_at" desc, "id" desc limit $2`;
    const count = `select count(*) as "total" from "voice_models" where "user_id" = $1 and "deleted_at" is null`;
    call = (c, callback) => {
      const user = c.request.toString("utf8");
      Promise.all([db.query(page, [user, 20]), db.query(count, [user])]).then(
        ([rows, total]) => callback(null, Buffer.from(`${total.rows[0].total}:${rows.rows.map((r) => r.id as string).join(",")}`)),
        (error: Error) => callback({ code: grpc.status.INTERNAL, details: error.message }),
      );
    };
  } else {
    throw new Error(`BASELINE_MODE must be noop, select, active or list, got ${mode}`);
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
