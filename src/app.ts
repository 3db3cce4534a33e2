import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { VoiceModelService as VoiceModelServiceDesc } from "../gen/voicemodel/v1/voice_model_service_pb";
import { createTokenVerifier } from "./auth/token-verifier";
import type { Config } from "./config";
import type { Database } from "./db/connection";
import { voiceModelHandlers, type VoiceModelHandlers } from "./rpc/voice-model-handlers";
import { CallGate } from "./server/call-gate";
import { registerConnectService } from "./server/connect-transport";
import { grpcService } from "./server/grpc-transport";
import { createHttpHandler } from "./server/http-server";
import { addReflection } from "./server/reflection";
import { VoiceModelService } from "./voice-models/voice-model-service";

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
  const gate = new CallGate(verifier, log);
  const models = new VoiceModelService(db.knex);
  const handlers: VoiceModelHandlers = {
    ...voiceModelHandlers(models),
  };
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
    const server = new grpc.Server();
    for (const service of services) {
      const { definition, implementation } = grpcService(service, handlers as unknown as Record<string, unknown>, gate, log);
      server.addService(definition, implementation);
    }
    const health = new HealthImplementation({ "": "SERVING", [VoiceModelServiceDesc.typeName]: "SERVING" });
    health.addToServer(server);
    addReflection(server, services);
    return { server, health };
  }

  const httpHandler = createHttpHandler({
    routes: (router) => services.forEach((s) => registerConnectService(router, s, handlers as unknown as Record<string, unknown>, gate, log)),
    corsOrigins: config.corsOrigins,
    isReady,
  });

  /** Binds both listeners (port 0 picks free ports). */
  async function listen(): Promise<RunningApp> {
    const { server: grpcServer, health } = buildGrpcServer();
    const grpcPort = await new Promise<number>((resolve, reject) =>
      grpcServer.bindAsync(`${config.host}:${config.grpcPort}`, grpc.ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
    const httpServer = http.createServer({ keepAliveTimeout: 65_000, headersTimeout: 30_000, requestTimeout: 0 }, httpHandler);
    await new Promise<void>((resolve, reject) => {
      httpServer.once("error", reject);
      httpServer.listen(config.httpPort, config.host, resolve);
    });
    const httpPort = (httpServer.address() as AddressInfo).port;
    return {
      grpcPort,
      httpPort,
      async close(graceMs = 10_000) {
        health.setStatus("", "NOT_SERVING");
        const forced = setTimeout(() => {
          grpcServer.forceShutdown();
          httpServer.closeAllConnections();
        }, graceMs);
        await Promise.all([
          new Promise<void>((resolve) => grpcServer.tryShutdown(() => resolve())),
          new Promise<void>((resolve) => {
            httpServer.close(() => resolve());
            httpServer.closeIdleConnections();
          }),
        ]);
        clearTimeout(forced);
      },
    };
  }

  return { listen, isReady };
}
