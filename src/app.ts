import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { hostname } from "node:os";
import type { Logger } from "pino";
import { VoiceModelService as VoiceModelServiceDesc } from "../gen/voicemodel/v1/voice_model_service_pb";
import { auditModelChanges } from "./audit/audit-log";
import { startHousekeeping } from "./audit/housekeeping";
import { createTokenVerifier } from "./auth/token-verifier";
import { BackupService } from "./backups/backup-service";
import { Caches } from "./cache/caches";
import { everyOnOneInstance } from "./cache/periodic";
import { CleanupScheduler } from "./cleanup/cleanup-scheduler";
import { CleanupService } from "./cleanup/cleanup-service";
import type { Config } from "./config";
import type { Database } from "./db/connection";
import { registerBlobStoreMetric } from "./metrics/blob-store-metric";
import { ServiceMetrics } from "./metrics/service-metrics";
import { FileMover } from "./model-files/file-mover";
import { ModelFileService } from "./model-files/model-file-service";
import { Retention } from "./model-files/retention";
import { PostgresRateLimiter } from "./rate-limit/rate-limiter";
import { backupHandlers } from "./rpc/backup-handlers";
import { governanceHandlers } from "./rpc/governance-handlers";
import { modelFileHandlers } from "./rpc/model-file-handlers";
import { usageHandlers } from "./rpc/usage-handlers";
import { voiceModelHandlers, type VoiceModelHandlers } from "./rpc/voice-model-handlers";
import { outsideCall } from "./db/call-deadline";
import { CallRegistry } from "./server/call-end";
import { CallGate } from "./server/call-gate";
import { CallGuard } from "./server/call-guard";
import { registerConnectService } from "./server/connect-transport";
import { fileRoutes } from "./server/file-routes";
import { limitGrpcSessions } from "./server/grpc-sessions";
import { grpcService } from "./server/grpc-transport";
import { answerClientError, createHttpHandler } from "./server/http-server";
import { addReflection } from "./server/reflection";
import { findPermission } from "./sharing/share-repository";
import { endSharesOfDeletedModels, SharingService } from "./sharing/sharing-service";
import { BlobStoreHealth } from "./storage/blob-store-health";
import { openBlobStore, openKeyProvider } from "./storage/open-storage";
import { rewrapDataKeys } from "./storage/rewrap";
import { SealedStore } from "./storage/sealed-store";
import { SelectionService } from "./usage/selection";
import { UsageService } from "./usage/usage-service";
import { UserErasure } from "./user-data/user-erasure";
import { NO_SHARES, SharedAccess } from "./voice-models/access";
import { VoiceModelService } from "./voice-models/voice-model-service";

/** The gRPC health service name of the blob store's entry (readiness stays the database's). */
export const BLOB_STORE_HEALTH_SERVICE = "voicemodel.v1.BlobStore";


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

/** Wires domain, handlers and both transports from the dependencies. Never listens itself. */
export function createApp(deps: AppDeps) {
  const { config, db, log } = deps;
  const verifier = createTokenVerifier(config.jwt, config.jwt.secret ?? deps.jwtSecret);
  // Governance: metrics, rate limits and refused-access audit around every call.
  const governance = config.governance;
  const instanceId = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  const metrics = new ServiceMetrics(db.knex, { storageQuotaBytes: governance.alerts.storageQuotaBytes });
  const guard = new CallGuard({
    knex: db.knex,
    metrics,
    rateLimiter: new PostgresRateLimiter(db.knex, governance.rateLimits),
    rateLimits: governance.rateLimits,
    log,
  });
  const registry = new CallRegistry();
  const gate = new CallGate(verifier, log, guard, registry);
  // Cache tables + the in-process cache (active models, list pages); caches.stats holds the hit/miss counters.
  const caches = new Caches({ knex: db.knex, kind: db.kind, listenUrl: config.databaseListenUrl, config: config.cache, log });
  const models = new VoiceModelService(db.knex, caches.modelReads, new SharedAccess(governance.sharingEnabled ? findPermission : NO_SHARES));
  models.onChange(caches.onModelChange);
  models.onChange(auditModelChanges);
  models.onChange(endSharesOfDeletedModels);
  models.onChange(metrics.onModelChanges);
  metrics.setCacheStatsSource(() => ({ ...caches.stats.tables, in_process: caches.stats.inProcess }));
  const cleanup = new CleanupService(db.knex, governance.cleanup, metrics, (actor, fn) => models.write(actor, fn));
  const scheduler = new CleanupScheduler({
    knex: db.knex,
    cleanup,
    intervalMs: governance.cleanup.intervalMs,
    leaseMs: governance.cleanup.leaseMs,
    holder: instanceId,
    log,
  });
  const usage = new UsageService(db.knex, caches, { ...config.usage, ...config.cache }, models.access);
  // Model files: sealed (encrypted, compressed) objects in the configured blob store.
  // The blob store's own health: a cached probe, shown in /readyz's body, gRPC health and a metric.
  // A call that finds the store down marks it down at once (only a probe marks it up again).
  const blobs = openBlobStore(config.files, (error) => storageHealth.markDown(error));
  const storageHealth = new BlobStoreHealth(blobs, config.files.storageProbeIntervalMs, log);
  registerBlobStoreMetric(metrics.registry, storageHealth);
  const mover = new FileMover(db.knex, blobs, log);
  mover.listenTo(models);
  const keyProvider = openKeyProvider(config.files, config.dataDir);
  const files = new ModelFileService({
    knex: db.knex,
    models,
    sealed: new SealedStore(blobs, keyProvider),
    maxFileBytes: config.files.maxFileBytes,
    // The mover's work outlives the call that kicks it: it runs outside the call's deadline.
    kickMover: () => outsideCall(() => mover.kick()),
  });
  const retention = new Retention({
    knex: db.knex,
    models,
    blobs,
    retentionDays: config.files.retentionDays,
    orphanGraceMs: config.files.orphanGraceMs,
    log,
    kickMover: () => outsideCall(() => mover.kick()),
  });
  const backups = new BackupService({
    knex: db.knex,
    models,
    files,
    pathPrefixes: config.files.gcs.bucket ? [`gs://${config.files.gcs.bucket}/${config.files.gcs.prefix}`, `gs://${config.files.gcs.bucket}/`] : [],
  });
  const erasure = new UserErasure(db.knex, models, blobs, log);
  const usageOf = async (actor: Parameters<typeof usage.stats>[0], modelId: string) => {
    const stats = await usage.stats(actor, { modelId } as Parameters<typeof usage.stats>[1]);
    return { ...stats, lastUsed: stats.lastUsed?.toISOString() ?? null, qualityRating: stats.qualityRating ?? null };
  };
  const handlers: VoiceModelHandlers = {
    ...voiceModelHandlers(models),
    ...modelFileHandlers(files, retention, usageOf),
    ...backupHandlers(backups, erasure),
    ...usageHandlers(usage, new SelectionService(db.knex, models, caches.modelReads)),
    ...governanceHandlers({
      knex: db.knex,
      sharing: new SharingService(db.knex, governance.sharingEnabled),
      cleanup,
      config: governance,
      instanceId,
    }),
  };
  const served = guard.wrap(VoiceModelServiceDesc, handlers);
  const services = [VoiceModelServiceDesc];

  const isReady = async () => {
    try {
      await db.knex.raw("select 1");
      return true;
    } catch {
      return false;
    }
  };

  function buildGrpcServer(): { server: grpc.Server; health: HealthImplementation } {
    // Channelz (per-call bookkeeping for grpc's debug service) is not served here: it only costs.
    const t = config.transport;
    const server = new grpc.Server({
      "grpc.enable_channelz": 0,
      "grpc.max_concurrent_streams": t.grpcMaxConcurrentStreams,
      "grpc-node.max_session_memory": t.grpcMaxSessionMemoryMb,
      "grpc.max_connection_idle_ms": t.grpcMaxConnectionIdleMs,
      "grpc.max_connection_age_ms": t.grpcMaxConnectionAgeMs,
      "grpc.max_connection_age_grace_ms": t.grpcMaxConnectionAgeGraceMs,
      "grpc.keepalive_time_ms": t.grpcKeepaliveTimeMs,
      "grpc.keepalive_timeout_ms": t.grpcKeepaliveTimeoutMs,
    });
    for (const service of services) {
      const { definition, implementation } = grpcService(service, served, gate, log, { registry, streamStallTimeoutMs: t.streamStallTimeoutMs });
      server.addService(definition, implementation);
    }
    const health = new HealthImplementation({ "": "SERVING", [VoiceModelServiceDesc.typeName]: "SERVING", [BLOB_STORE_HEALTH_SERVICE]: "UNKNOWN" });
    storageHealth.onChange((state) =>
      health.setStatus(BLOB_STORE_HEALTH_SERVICE, state.status === "up" ? "SERVING" : state.status === "down" ? "NOT_SERVING" : "UNKNOWN"),
    );
    health.addToServer(server);
    addReflection(server, services);
    return { server, health };
  }

  const httpHandler = createHttpHandler({
    routes: (router) => services.forEach((s) => registerConnectService(router, s, served, gate, log, registry)),
    plainRoutes: fileRoutes({ gate, guard, files, backups, usageOf, log, rpc: served }),
    corsOrigins: config.corsOrigins,
    isReady,
    readinessDetails: () => ({ blobStore: storageHealth.state }),
    draining: () => registry.draining,
    streamStallTimeoutMs: config.transport.streamStallTimeoutMs,
    metrics: async () => ({ contentType: metrics.registry.contentType, body: await metrics.registry.metrics() }),
    log,
  });

  /** Binds both listeners (port 0 picks free ports). */
  async function listen(): Promise<RunningApp> {
    await caches.start();
    // Fleet-wide jobs run on one instance at a time (a lease in job_leases).
    const usagePurge = everyOnOneInstance(db.knex, { name: "usage-purge", holder: instanceId }, config.usage.purgeIntervalMs, () => usage.purgeExpired(), log);
    const stopHousekeeping = startHousekeeping({ knex: db.knex, metrics, config: governance, log });
    scheduler.start();
    mover.start(60_000);
    storageHealth.start();
    const fileRetention = everyOnOneInstance(
      db.knex,
      { name: "file-retention", holder: instanceId },
      config.files.purgeIntervalMs,
      () => retention.runOnce().then(() => erasure.resumeAll()),
      log,
    );
    // Account deletions a crash interrupted carry on now.
    erasure.resumeAll().catch((error) => log.error({ err: error }, "resuming user data purges failed"));
    // After a master key rotation (MASTER_KEYS_PREVIOUS set), move every data key to the new key.
    if (config.files.masterKeys && config.files.masterKeys.length > 1) {
      rewrapDataKeys(db.knex, keyProvider).then(
        (n) => n > 0 && log.info({ rewrapped: n }, "data keys re-wrapped with the current master key"),
        (error) => log.error({ err: error }, "re-wrapping data keys failed"),
      );
    }
    const { server: grpcServer, health } = buildGrpcServer();
    const grpcPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync(`${config.host}:${config.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    const t = config.transport;
    limitGrpcSessions(grpcServer, { maxConnections: t.maxConnections, maxResetsPerSecond: t.grpcMaxResetsPerSecond });
    const httpServer = http.createServer(
      { keepAliveTimeout: 65_000, headersTimeout: t.httpHeadersTimeoutMs, requestTimeout: t.httpRequestTimeoutMs },
      httpHandler,
    );
    httpServer.maxConnections = t.maxConnections;
    httpServer.on("clientError", (error, socket) => answerClientError(error, socket, log));
    httpServer.on("request", (req: http.IncomingMessage) => limitBodyIdleTime(req, t.httpBodyIdleTimeoutMs));
    await new Promise<void>((resolve, reject) => {
      httpServer.once("error", reject);
      httpServer.listen(config.httpPort, config.host, resolve);
    });
    const httpPort = (httpServer.address() as AddressInfo).port;
    return {
      grpcPort,
      httpPort,
      async close(graceMs = config.shutdown.graceMs) {
        // Readiness and health turn red at once; calls are still served through the drain delay,
        // so a load balancer that has not yet seen the red probe loses nothing.
        registry.draining = true;
        health.setStatus("", "NOT_SERVING");
        health.setStatus(VoiceModelServiceDesc.typeName, "NOT_SERVING");
        if (config.shutdown.drainDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, config.shutdown.drainDelayMs));
        registry.refusing = true;
        const closed = Promise.all([
          new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve())),
          new Promise<void>((resolve) => {
            httpServer.close(() => resolve());
            httpServer.closeIdleConnections();
          }),
        ]);
        let forced: NodeJS.Timeout | undefined;
        const graceOver = new Promise<void>((resolve) => (forced = setTimeout(resolve, graceMs)));
        await Promise.race([closed, graceOver]);
        if (registry.size > 0) {
          // What is left ends with UNAVAILABLE (SHUTTING_DOWN); a moment for those replies to go out.
          registry.endAll();
          await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1_000))]);
        }
        grpcServer.forceShutdown();
        httpServer.closeAllConnections();
        await closed;
        clearTimeout(forced);
        await usagePurge.stop();
        await scheduler.stop();
        await stopHousekeeping();
        await caches.stop();
        await fileRetention.stop();
        await mover.stop();
        storageHealth.stop();
      },
    };
  }

  return { listen, isReady, caches };
}

/** A request body that sends nothing for `idleMs` is cut off (node:http's timeouts only bound the whole request). */
function limitBodyIdleTime(req: http.IncomingMessage, idleMs: number): void {
  if (req.method === "GET" || req.method === "HEAD" || req.headers["content-length"] === "0" || req.complete) return;
  req.socket.setTimeout(idleMs);
  // From the reply on, node:http manages the socket's timeout again (keep-alive).
  req.once("end", () => req.socket.setTimeout(0));
}
