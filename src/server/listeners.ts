import type { DescService } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Config } from "../config";
import type { BlobStoreHealth } from "../storage/blob-store-health";
import type { CallRegistry } from "./call-end";
import type { CallGate } from "./call-gate";
import { registerConnectService } from "./connect-transport";
import { limitGrpcSessions } from "./grpc-sessions";
import { grpcService } from "./grpc-transport";
import { answerClientError, createHttpHandler, type HttpServerOptions } from "./http-server";
import { startMemoryReclaim } from "./memory-reclaim";
import { addReflection } from "./reflection";

/** The gRPC health service name of the blob store's entry (readiness stays the database's). */
export const BLOB_STORE_HEALTH_SERVICE = "voicemodel.v1.BlobStore";

export interface ListenerOptions {
  config: Readonly<Config>;
  log: Logger;
  /** The services and their (guarded) handlers, served on both listeners. */
  services: DescService[];
  served: Record<string, unknown>;
  gate: CallGate;
  registry: CallRegistry;
  storageHealth: BlobStoreHealth;
  /** What the HTTP listener serves besides the RPCs: file routes, probes, metrics, CORS. */
  http: Omit<HttpServerOptions, "routes" | "draining" | "streamStallTimeoutMs" | "corsOrigins" | "log">;
}

export interface Listeners {
  grpcPort: number;
  httpPort: number;
  /**
   * Readiness and health turn red at once; calls are still served through the drain delay (a load
   * balancer that has not yet seen the red probe loses nothing), then refused; running ones get
   * graceMs, then what is left ends with UNAVAILABLE (SHUTTING_DOWN) and both listeners close.
   */
  close(graceMs: number): Promise<void>;
}

/** Binds the gRPC and HTTP listeners (port 0 picks free ports) with their limits. */
export async function bindListeners(options: ListenerOptions): Promise<Listeners> {
  const { config, log, services, served, gate, registry } = options;
  const t = config.transport;
  const { server: grpcServer, health } = buildGrpcServer(options);
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync(`${config.host}:${config.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  limitGrpcSessions(grpcServer, { maxConnections: t.maxConnections, maxResetsPerSecond: t.grpcMaxResetsPerSecond });
  const reclaim = startMemoryReclaim({ thresholdBytes: t.memoryReclaimMb * 2 ** 20, intervalMs: 2_000, endedCalls: () => registry.ended, callsInFlight: () => registry.size, log });

  const httpHandler = createHttpHandler({
    ...options.http,
    routes: (router) => new Map(services.flatMap((s) => [...registerConnectService(router, s, served, gate, log, registry)])),
    corsOrigins: config.corsOrigins,
    draining: () => registry.draining,
    streamStallTimeoutMs: t.streamStallTimeoutMs,
    log,
  });
  const httpServer = http.createServer({ keepAliveTimeout: 65_000, headersTimeout: t.httpHeadersTimeoutMs, requestTimeout: t.httpRequestTimeoutMs }, httpHandler);
  httpServer.maxConnections = t.maxConnections;
  httpServer.on("clientError", (error, socket) => answerClientError(error, socket, log));
  httpServer.on("request", (req: http.IncomingMessage) => limitBodyIdleTime(req, t.httpBodyIdleTimeoutMs));
  await new Promise<void>((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(config.httpPort, config.host, resolve);
  });

  return {
    grpcPort,
    httpPort: (httpServer.address() as AddressInfo).port,
    async close(graceMs) {
      registry.draining = true;
      health.setStatus("", "NOT_SERVING");
      for (const service of services) health.setStatus(service.typeName, "NOT_SERVING");
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
        // A moment for the SHUTTING_DOWN replies to go out.
        registry.endAll();
        await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1_000))]);
      }
      grpcServer.forceShutdown();
      httpServer.closeAllConnections();
      await closed;
      clearTimeout(forced);
      reclaim.stop();
    },
  };
}

function buildGrpcServer({ config, log, services, served, gate, registry, storageHealth }: ListenerOptions) {
  const t = config.transport;
  // Channelz (per-call bookkeeping for grpc's debug service) is not served here: it only costs.
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
  const health = new HealthImplementation({
    "": "SERVING",
    ...Object.fromEntries(services.map((s) => [s.typeName, "SERVING"])),
    [BLOB_STORE_HEALTH_SERVICE]: "UNKNOWN",
  });
  storageHealth.onChange((state) =>
    health.setStatus(BLOB_STORE_HEALTH_SERVICE, state.status === "up" ? "SERVING" : state.status === "down" ? "NOT_SERVING" : "UNKNOWN"),
  );
  health.addToServer(server);
  addReflection(server, services);
  return { server, health };
}

/** A request body that sends nothing for `idleMs` is cut off (node:http's timeouts only bound the whole request). */
function limitBodyIdleTime(req: http.IncomingMessage, idleMs: number): void {
  if (req.method === "GET" || req.method === "HEAD" || req.headers["content-length"] === "0" || req.complete) return;
  req.socket.setTimeout(idleMs);
  // From the reply on, node:http manages the socket's timeout again (keep-alive).
  req.once("end", () => req.socket.setTimeout(0));
}
