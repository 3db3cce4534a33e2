import { createContextValues, cors as connectCors } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import http from "node:http";
import type { Logger } from "pino";
import { createConnectAdapter } from "./connect-adapter";
import { clientAddressKey } from "./connect-transport";
import { serveIndex } from "./index-page";

export interface HttpServerOptions {
  routes: (router: ConnectRouter) => void;
  corsOrigins: string[];
  /** Resolves true when the service can serve (the database answers). */
  isReady: () => Promise<boolean>;
  /** Prometheus exposition for GET /metrics (no token; keep the port off the public internet). */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Plain HTTP routes (model file downloads, uploads, backups); returns true when it took the request. */
  plainRoutes?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  log: Logger;
}

const ALLOWED_HEADERS = [...connectCors.allowedHeaders, "authorization", "x-request-id"].join(", ");
const EXPOSED_HEADERS = [...connectCors.exposedHeaders, "x-request-id", "retry-after"].join(", ");
// PUT: the large-file upload route (PUT /v1/voice-models/{id}/file).
const ALLOWED_METHODS = [...connectCors.allowedMethods, "PUT"].join(", ");

function applyCors(req: http.IncomingMessage, res: http.ServerResponse, origins: string[]): boolean {
  const origin = req.headers.origin;
  if (!origin || !(origins.includes("*") || origins.includes(origin))) return false;
  res.setHeader("access-control-allow-origin", origin);
  res.setHeader("vary", "origin");
  res.setHeader("access-control-expose-headers", EXPOSED_HEADERS);
  return true;
}

function sendJson(res: http.ServerResponse, status: number, body: object) {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/**
 * The HTTP/1.1 listener's handler: Connect JSON/binary and gRPC-Web for browsers and the mobile
 * app, CORS for configured origins, and the /healthz and /readyz probes (no token needed).
 */
export function createHttpHandler(options: HttpServerOptions): http.RequestListener {
  const connect = createConnectAdapter({
    routes: options.routes,
    // JSON replies show fields at their defaults (isActive: false, total: 0). A request field the
    // contract does not have is refused, naming it, as the proto3 JSON mapping says (connect would
    // drop it silently: a misspelt field must not turn into a default).
    jsonOptions: { alwaysEmitImplicit: true, ignoreUnknownFields: false },
    grpc: false,
    contextValues: (req) => createContextValues().set(clientAddressKey, req.socket.remoteAddress ?? "unknown"),
    log: options.log,
  });
  return (req, res) => {
    const corsAllowed = applyCors(req, res, options.corsOrigins);
    if (req.method === "OPTIONS" && corsAllowed) {
      res.writeHead(204, {
        "access-control-allow-methods": ALLOWED_METHODS,
        "access-control-allow-headers": ALLOWED_HEADERS,
        "access-control-max-age": "7200",
      });
      res.end();
      return;
    }
    if (req.url === "/healthz") return sendJson(res, 200, { status: "ok" });
    if (serveIndex(req, res)) return;
    if (req.url === "/metrics" && req.method === "GET" && options.metrics) {
      options.metrics().then(
        ({ contentType, body }) => res.writeHead(200, { "content-type": contentType }).end(body),
        () => sendJson(res, 503, { status: "metrics unavailable" }),
      );
      return;
    }
    if (req.url === "/readyz") {
      options.isReady().then(
        (ready) => sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : "database unreachable" }),
        () => sendJson(res, 503, { status: "database unreachable" }),
      );
      return;
    }
    if (options.plainRoutes?.(req, res)) return;
    connect(req, res);
  };
}
