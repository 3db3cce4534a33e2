import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { VoiceModelService as VoiceModelServiceDesc } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { createTokenVerifier } from "../auth/token-verifier";
import type { Config } from "../config";
import type { Database } from "../db/connection";
import { registerBlobStoreMetric } from "../metrics/blob-store-metric";
import { PostgresRateLimiter } from "../rate-limit/rate-limiter";
import { CallRegistry, shuttingDown } from "../server/call-end";
import { CallGate } from "../server/call-gate";
import { CallGuard } from "../server/call-guard";
import { fileRoutes } from "../server/file-routes";
import { restRoutes } from "../server/rest-routes";
import { bindListeners } from "../server/listeners";
import { rewrapDataKeys } from "../storage/rewrap";
import { ErasureKeyMismatchError } from "../user-data/erasure-keys";
import { buildDomain } from "./domain";
import { buildHandlers } from "./handlers";
import { periodicJobs } from "./jobs";

export { BLOB_STORE_HEALTH_SERVICE } from "../server/listeners";

export interface AppDeps {
  config: Readonly<Config>;
  db: Database;
  log: Logger;
  /** HS256 secret when config.jwt.secret is unset (the embedded secret file). */
  jwtSecret: string | undefined;
}

export interface RunningApp {
  grpcPort: number;
  httpPort: number;
  /** Stops accepting calls, lets running ones finish (up to graceMs), closes both listeners. */
  close(graceMs?: number): Promise<void>;
}

/**
 * Wires the domain, the handlers, the periodic jobs and both transports from the dependencies.
 * Never listens by itself: listen() binds.
 */
export function createApp(deps: AppDeps) {
  const { config, db, log } = deps;
  const governance = config.governance;
  const instanceId = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  const domain = buildDomain({ config, db, log });
  const { notifications, feed, metrics, caches, storageHealth, mover, erasure, erasedUsers, keyProvider, backups } = domain;
  registerBlobStoreMetric(metrics.registry, storageHealth);

  // Around every call, whichever transport: the token (gate), then metrics, rate limits and
  // refused-access audit (guard).
  const guard = new CallGuard({
    knex: db.knex,
    metrics,
    rateLimiter: new PostgresRateLimiter(db.knex, governance.rateLimits),
    rateLimits: governance.rateLimits,
    log,
    erased: erasedUsers,
  });
  const registry = new CallRegistry();
  // An erased user's still-valid token is refused at the gate, from memory (no round trip).
  const gate = new CallGate(createTokenVerifier(config.jwt, config.jwt.secret ?? deps.jwtSecret), log, guard, registry, erasure.isErased);
  const { handlers, fileRoutes: fileRouteHandlers } = buildHandlers(domain, { knex: db.knex, governance, instanceId });
  const served = guard.wrap(VoiceModelServiceDesc, handlers);
  const jobs = periodicJobs(domain, { config, db, log, instanceId });

  const isReady = async () => {
    try {
      await db.knex.raw("select 1");
      return true;
    } catch {
      return false;
    }
  };

  async function listen(): Promise<RunningApp> {
    await notifications?.start();
    // Before any call: the erasure key checked, old hashes keyed, the erased users loaded. A
    // wrong key stops the start; an unreachable database does not (the first call tries again).
    await erasure.prepare().catch((error: unknown) => {
      if (error instanceof ErasureKeyMismatchError) throw error;
      log.warn({ err: error }, "erased users not read at start (the database is unreachable); the first call reads them");
    });
    jobs.start();
    storageHealth.start();
    // Account deletions a crash interrupted carry on now.
    erasure.resumeAll().catch((error) => log.error({ err: error }, "resuming user data purges failed"));
    // So do backup rewrites of withdrawals (their backups stay blocked until done).
    backups.rewritePending().catch((error) => log.error({ err: error }, "resuming backup rewrites failed"));
    // After a master key rotation (MASTER_KEYS_PREVIOUS set), move every data key to the new key.
    if (config.files.masterKeys && config.files.masterKeys.length > 1) {
      rewrapDataKeys(db.knex, keyProvider).then(
        (n) => n > 0 && log.info({ rewrapped: n }, "data keys re-wrapped with the current master key"),
        (error) => log.error({ err: error }, "re-wrapping data keys failed"),
      );
    }
    const files = fileRoutes({ gate, guard, log, handlers: fileRouteHandlers(served) });
    // The design document's REST paths, from the proto's google.api.http annotations.
    const rest = restRoutes({ service: VoiceModelServiceDesc, served, gate, registry, files, log });
    const listeners = await bindListeners({
      config,
      log,
      services: [VoiceModelServiceDesc],
      served,
      gate,
      registry,
      storageHealth,
      http: {
        plainRoutes: (req, res) => files(req, res) || rest(req, res),
        isReady,
        readinessDetails: () => ({ blobStore: storageHealth.state }),
        metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
      },
    });
    return {
      grpcPort: listeners.grpcPort,
      httpPort: listeners.httpPort,
      async close(graceMs = config.shutdown.graceMs) {
        // Watch streams never finish by themselves: end them now, so their clients resume
        // elsewhere at once instead of holding the grace period.
        feed.close(shuttingDown("the instance is stopping; watch again (with the last event id) on another"));
        await listeners.close(graceMs);
        await jobs.stop();
        await notifications?.stop();
        await mover.idle();
        storageHealth.stop();
      },
    };
  }

  return { listen, isReady, caches };
}
