import { createApp } from "./app";
import { loadOrCreateSecret } from "./auth/secret-file";
import { ConfigError, parseConfig } from "./config";
import { openDatabase } from "./db/connection";
import { DataDirLockedError } from "./db/data-dir-lock";
import { migrateToLatest } from "./db/migrate";
import { createLogger } from "./logger";
import { startBanner } from "./start-banner";

/** parse config -> open the database -> migrate -> listen; stop gracefully on SIGTERM/SIGINT. */
async function main() {
  const config = parseConfig();
  const log = createLogger(config.logLevel);
  const db = await openDatabase({ url: config.databaseUrl, pgliteDir: config.dataDir, poolMax: config.dbPoolMax, acquireTimeoutMs: config.dbAcquireTimeoutMs });
  if (config.migrateOnStart || db.kind === "pglite") {
    const applied = await migrateToLatest(db.knex);
    if (applied.length) log.info({ applied }, "migrations applied");
  }
  const jwtSecret = config.jwt.secret || config.jwt.jwksUrl ? undefined : loadOrCreateSecret(config.dataDir);
  const running = await createApp({ config, db, log, jwtSecret }).listen();
  log.info(
    { grpcPort: running.grpcPort, httpPort: running.httpPort, database: db.kind, dataDir: db.kind === "pglite" ? config.dataDir : undefined },
    "voice model service listening",
  );
  if (process.stdout.isTTY) {
    const { host, dataDir } = config;
    process.stdout.write(startBanner({ host, dataDir, database: db.kind, grpcPort: running.grpcPort, httpPort: running.httpPort }));
  }

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping");
    await running.close();
    await db.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}

main().catch((error: Error) => {
  const known = error instanceof ConfigError || error instanceof DataDirLockedError;
  process.stderr.write(known ? `voice-model-service: ${error.message}\n` : `voice-model-service: ${error.stack}\n`);
  process.exit(1);
});
