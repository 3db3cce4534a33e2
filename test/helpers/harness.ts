import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { ErrorInfoSchema, type ErrorInfo } from "../../gen/google/rpc/error_details_pb";
import type { VoiceModel } from "../../gen/voicemodel/v1/voice_model_pb";
import { CreateVoiceModelRequestSchema, VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { createApp, type RunningApp } from "../../src/app";
import { parseConfig } from "../../src/config";
import { openDatabase, type Database } from "../../src/db/connection";
import { createLogger } from "../../src/logger";
import { connectJsonClient, fetchJson, type JsonResponse } from "./connect-client";
import { createTestDatabase, type TestDatabase } from "./database";
import { ERASURE_KEY, JWT_SECRET } from "./env";
import { connectGrpc, GrpcCallError, type GrpcClient, type GrpcConnection } from "./grpc-client";
import { adminToken, serviceToken, userToken } from "./tokens";

export type Service = typeof VoiceModelService;
export type MethodName = (typeof VoiceModelService.methods)[number]["localName"];
export type Transport = "grpc" | "connect";
export const TRANSPORTS: Transport[] = ["grpc", "connect"];

/** How a call ended, the same shape whichever transport carried it. */
export interface RpcOutcome {
  code: Code | 0;
  message?: any;
  errorInfo?: ErrorInfo;
  errorMessage?: string;
  /** The x-request-id response header. */
  requestId?: string;
}

/** Someone calling the service with their own token. */
export interface Actor {
  userId: string;
  token: string;
  grpc: GrpcClient<Service>;
  connect: Client<Service>;
}

export interface TestServer {
  grpcPort: number;
  httpPort: number;
  /** http://127.0.0.1:<httpPort> */
  baseUrl: string;
  db: Database;
  grpc(token?: string): GrpcClient<Service>;
  connect(token?: string): Client<Service>;
  actor(userId?: string): Promise<Actor>;
  serviceActor(): Promise<Actor>;
  adminActor(): Promise<Actor>;
  /** Calls an RPC over either transport and reports how it ended (never throws for RPC errors). */
  call(transport: Transport, method: MethodName, request: object | object[], token?: string, headers?: Record<string, string>): Promise<RpcOutcome>;
  /** POSTs a Connect JSON body to an RPC with fetch. */
  rpcJson(method: string, body: unknown, token?: string, headers?: Record<string, string>): Promise<JsonResponse>;
  fetch(path: string, init?: Parameters<typeof fetchJson>[1]): Promise<JsonResponse>;
  /** Everything the server logged (JSON lines), when started with captureLogs. */
  logs(): string;
  /** Stops the server; calls in flight get graceMs (default 1 s) to finish. */
  close(graceMs?: number): Promise<void>;
}

export interface TestServerOptions {
  /** Extra settings, as environment variables (e.g. CORS_ORIGINS); undefined unsets a default. */
  env?: Record<string, string | undefined>;
  /** Serve this database (the caller disposes of it). */
  database?: Database;
  /** Open this PostgreSQL URL (not migrated here) instead of a fresh test database. */
  databaseUrl?: string;
  /** Keep the server's log lines in memory (logs()) instead of writing them out; LOG_LEVEL still applies. */
  captureLogs?: boolean;
}

export const uniqueUser = (prefix = "user") => `${prefix}-${randomBytes(5).toString("hex")}`;

/** A valid CreateVoiceModel request with a unique path; override any field. */
export function modelInput(
  overrides: Partial<MessageInitShape<typeof CreateVoiceModelRequestSchema>> = {},
): MessageInitShape<typeof CreateVoiceModelRequestSchema> {
  return { provider: "xtts-v2", modelPath: `models/${randomBytes(6).toString("hex")}.pth`, ...overrides };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let sharedDataDir: string | undefined;

/**
 * The data folder of servers whose test names none: one per test file, shared by its servers as
 * a fleet shares its key files (the master key file lands there), and never the checkout's ./data.
 */
function defaultDataDir(): string {
  if (!sharedDataDir) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-test-data-"));
    process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
    sharedDataDir = dir;
  }
  return sharedDataDir;
}

/** Starts the real app in-process on random ports (127.0.0.1) against its own database. */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  let owned: TestDatabase | undefined;
  let db: Database;
  if (options.database) db = options.database;
  else if (options.databaseUrl) db = await openDatabase({ url: options.databaseUrl, poolMax: 10 });
  else db = (owned = await createTestDatabase()).db;

  const config = parseConfig({
    ...(options.env && "DATA_DIR" in options.env ? {} : { DATA_DIR: defaultDataDir() }),
    HOST: "127.0.0.1",
    PORT: "0",
    GRPC_PORT: "0",
    JWT_SECRET,
    ERASURE_KEY,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    // Rate limits (5 creates per hour per user) would trip most tests; the rate-limit tests turn them on.
    RATE_LIMITS_ENABLED: "false",
    ...options.env,
  });
  let running: RunningApp;
  const logLines: string[] = [];
  const log = createLogger(config.logLevel, options.captureLogs ? { write: (line: string) => void logLines.push(line) } : undefined);
  try {
    running = await createApp({ config, db, log, jwtSecret: undefined }).listen();
  } catch (error) {
    await owned?.dispose();
    throw error;
  }
  const baseUrl = `http://127.0.0.1:${running.httpPort}`;
  const channel: GrpcConnection<Service> = connectGrpc(VoiceModelService, `127.0.0.1:${running.grpcPort}`);

  const server: TestServer = {
    grpcPort: running.grpcPort,
    httpPort: running.httpPort,
    baseUrl,
    db,
    grpc: (token) => channel.as(token),
    connect: (token) => connectJsonClient(VoiceModelService, baseUrl, token),
    async actor(userId = uniqueUser()) {
      const token = await userToken(userId);
      return { userId, token, grpc: channel.as(token), connect: server.connect(token) };
    },
    async serviceActor() {
      const token = await serviceToken();
      return { userId: "training-service", token, grpc: channel.as(token), connect: server.connect(token) };
    },
    async adminActor() {
      const token = await adminToken();
      return { userId: "ops-admin", token, grpc: channel.as(token), connect: server.connect(token) };
    },
    async call(transport, method, request, token, headers = {}) {
      const kind = VoiceModelService.methods.find((m) => m.localName === method)?.methodKind;
      if (!kind) throw new Error(`no method ${method}`);
      // Client streaming takes a list of requests; a single request is sent alone.
      const input = kind === "client_streaming" && !Array.isArray(request) ? [request] : request;
      const single = (messages: unknown[]) => (kind === "server_streaming" ? messages : messages[0]);
      if (transport === "grpc") {
        try {
          const reply = await channel.invoke(method, input, { token, metadata: headers });
          return { code: 0, message: single(reply.message), requestId: reply.requestId };
        } catch (error) {
          if (!(error instanceof GrpcCallError)) throw error;
          return { code: error.code as number as Code, errorInfo: error.errorInfo, errorMessage: error.details, requestId: error.requestId };
        }
      }
      const client = server.connect(token) as unknown as Record<string, Function>;
      let requestId: string | undefined;
      const options = { headers, onHeader: (h: Headers) => (requestId = h.get("x-request-id") ?? undefined) };
      try {
        let message: unknown;
        if (kind === "server_streaming") {
          const messages: unknown[] = [];
          for await (const m of client[method](input, options) as AsyncIterable<unknown>) messages.push(m);
          message = messages;
        } else if (kind === "client_streaming") {
          message = await client[method](
            (async function* () {
              yield* input as unknown[];
            })(),
            options,
          );
        } else {
          message = await client[method](input, options);
        }
        return { code: 0, message, requestId };
      } catch (error) {
        if (!(error instanceof ConnectError)) throw error;
        return {
          code: error.code,
          errorInfo: error.findDetails(ErrorInfoSchema)[0],
          errorMessage: error.rawMessage,
          requestId: error.metadata.get("x-request-id") ?? requestId,
        };
      }
    },
    rpcJson: (method, body, token, headers) =>
      fetchJson(`${baseUrl}/${VoiceModelService.typeName}/${method}`, { body, token, headers }),
    fetch: (path, init) => fetchJson(`${baseUrl}${path}`, init),
    logs: () => logLines.join(""),
    async close(graceMs = 1_000) {
      channel.close();
      try {
        await running.close(graceMs);
      } finally {
        if (owned) await owned.dispose();
        else if (options.databaseUrl) await db.close();
      }
    },
  };
  return server;
}

/** One server per test file: started before the first test, closed after the last. */
export function useTestServer(options: TestServerOptions = {}): () => TestServer {
  let server: TestServer | undefined;
  beforeAll(async () => {
    server = await startTestServer(options);
  });
  afterAll(async () => {
    await server?.close();
  });
  return () => {
    if (!server) throw new Error("the test server is not running (did beforeAll fail?)");
    return server;
  };
}

/** Creates a model over gRPC and returns it. */
export async function createModel(
  actor: Pick<Actor, "grpc">,
  overrides: Partial<MessageInitShape<typeof CreateVoiceModelRequestSchema>> = {},
): Promise<VoiceModel> {
  const { message } = await actor.grpc.createVoiceModel(modelInput(overrides));
  return message.model!;
}

/** The ids of the user's active models as the list reports them (to catch "two active"). */
export async function activeIds(actor: Pick<Actor, "grpc">, userId?: string): Promise<string[]> {
  const { message } = await actor.grpc.listVoiceModels({ userId, isActive: true, limit: 100 });
  return message.models.map((m) => m.id);
}

/** The user's active model id via GetActiveVoiceModel (undefined when none). */
export async function activeId(actor: Pick<Actor, "grpc">, userId?: string): Promise<string | undefined> {
  const { message } = await actor.grpc.getActiveVoiceModel({ userId });
  return message.model?.id;
}
