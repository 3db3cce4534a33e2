import { createRegistry } from "@bufbuild/protobuf";
import { createContextValues, cors as connectCors } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import { errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import http from "node:http";
import type { Duplex } from "node:stream";
import { invalidArgument } from "../errors";
import type { Logger } from "pino";
import { createConnectAdapter } from "./connect-adapter";
import { requestIdFor } from "./call-gate";
import { clientAddressKey, connectError, type DirectUnary } from "./connect-transport";
import { sendHttpError } from "./http-error";
import { serveConsole } from "./console-route";
import { serveIndex } from "./index-page";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";

/** Message types an Any in a reply may hold, for the JSON form (batch items' error details). */
const JSON_TYPES = createRegistry(ErrorInfoSchema);

export interface HttpServerOptions {
  /** Registers the services on connect's router; returns their unary calls by path (the direct path). */
  routes: (router: ConnectRouter) => ReadonlyMap<string, DirectUnary>;
  corsOrigins: string[];
  /** Resolves true when the service can serve (the database answers). */
  isReady: () => Promise<boolean>;
  /** More state for /readyz's JSON body that does not decide readiness (the blob store's). */
  readinessDetails?: () => object;
  /** Prometheus exposition for GET /metrics (no token; keep the port off the public internet). */
  metrics?: () => Promise<{ contentType: string; body: string }>;
  /** Plain HTTP routes (model file downloads, uploads, backups); returns true when it took the request. */
  plainRoutes?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean;
  log: Logger;
  /** True once a shutdown has begun: /readyz answers 503 from then on. */
  draining?: () => boolean;
  /** A streamed reply whose reader takes nothing for this long is cut off. */
  streamStallTimeoutMs?: number;
}

// Request headers a page may send: Connect and gRPC-Web (Connect's list, plus the gRPC-Web
// compression pair it leaves out), the bearer token and request id, and what the file routes
// read: Range/If-Range for resumable downloads, x-content-sha256 for checksummed uploads,
// If-Match/If-None-Match for conditional requests.
const ALLOWED_HEADERS = [
  ...connectCors.allowedHeaders,
  "Grpc-Encoding",
  "Grpc-Accept-Encoding",
  "Authorization",
  "X-Request-Id",
  "Range",
  "If-Range",
  "If-Match",
  "If-None-Match",
  "X-Content-Sha256",
].join(", ");
// Response headers a page's script may read (beyond the CORS-safelisted ones): Connect and
// gRPC-Web status, request id and rate-limit wait, and what a resumable downloader needs.
const EXPOSED_HEADERS = [
  ...connectCors.exposedHeaders,
  "Grpc-Encoding",
  "X-Request-Id",
  "Retry-After",
  "ETag",
  "Content-Range",
  "Accept-Ranges",
  "Content-Disposition",
  "Content-Length",
].join(", ");
// PUT: the large-file upload route (PUT /v1/voice-models/{id}/file) and the REST update;
// DELETE: the REST delete (DELETE /voice-models/{modelId}).
const ALLOWED_METHODS = [...connectCors.allowedMethods, "PUT", "DELETE"].join(", ");

/**
 * Sets the CORS headers with setHeader, before any route runs, so every reply to an allowed
 * origin carries them: RPC replies, file routes, probes and error replies alike.
 */
function applyCors(req: http.IncomingMessage, res: http.ServerResponse, origins: string[]): boolean {
  if (origins.length === 0) return false;
  // The reply depends on the Origin header (it is echoed, even for "*"), allowed or not: shared
  // caches must not hand one origin's reply to another.
  res.setHeader("vary", "origin");
  const origin = req.headers.origin;
  if (!origin || !(origins.includes("*") || origins.includes(origin))) return false;
  res.setHeader("access-control-allow-origin", origin);
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
    // The registry lets JSON carry the google.rpc.ErrorInfo inside a batch item's google.rpc.Status.
    jsonOptions: { alwaysEmitImplicit: true, ignoreUnknownFields: false, registry: JSON_TYPES },
    grpc: false,
    contextValues: (req) => createContextValues().set(clientAddressKey, req.socket.remoteAddress ?? "unknown"),
    log: options.log,
    streamStallTimeoutMs: options.streamStallTimeoutMs,
  });
  const handle: http.RequestListener = (req, res) => {
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
    if (serveConsole(req, res)) return;
    if (req.url === "/metrics" && req.method === "GET" && options.metrics) {
      options.metrics().then(
        ({ contentType, body }) => res.writeHead(200, { "content-type": contentType }).end(body),
        () => sendJson(res, 503, { status: "metrics unavailable" }),
      );
      return;
    }
    if (req.url === "/readyz" && options.draining?.()) return sendJson(res, 503, { status: "shutting down" });
    if (req.url === "/readyz") {
      const details = options.readinessDetails?.() ?? {};
      options.isReady().then(
        (ready) => sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : "database unreachable", ...details }),
        () => sendJson(res, 503, { status: "database unreachable", ...details }),
      );
      return;
    }
    if (options.plainRoutes?.(req, res)) return;
    connect(req, res);
  };
  return (req, res) => {
    const requestId = requestIdFor(firstHeader(req.headers["x-request-id"]));
    // Every reply carries the id, including those connect writes itself (undecodable bodies,
    // unknown routes); downstream code reads the same sane id from the request.
    req.headers["x-request-id"] = requestId;
    res.setHeader("x-request-id", requestId);
    try {
      handle(req, res);
    } catch (error) {
      // A bug on some odd input must cost this request alone, never the listener.
      if (!res.headersSent) req.resume();
      sendHttpError(res, error, requestId, options.log);
    }
  };
}

const firstHeader = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

/**
 * node:http's answer to a request it could not parse (broken request line or headers, headers
 * too large), in the service's error shape and with a request id, instead of a bare 400.
 */
export function answerClientError(error: Error & { code?: string }, socket: Duplex, log: Logger): void {
  if (error.code === "ECONNRESET" || !socket.writable) {
    socket.destroy();
    return;
  }
  const requestId = requestIdFor(undefined);
  const tooLarge = error.code === "HPE_HEADER_OVERFLOW";
  const reply = connectError(invalidArgument("request", `malformed HTTP request (${error.code ?? "parse error"})`), requestId, log);
  const body = Buffer.from(errorToJsonBytes(reply, {}));
  socket.end(
    `HTTP/1.1 ${tooLarge ? "431 Request Header Fields Too Large" : "400 Bad Request"}\r\n` +
      `content-type: application/json\r\ncontent-length: ${body.length}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n` +
      body.toString(),
  );
}
