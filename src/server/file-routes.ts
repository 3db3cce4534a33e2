import type http from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import { invalidArgument } from "../errors";
import type { CallName } from "../rpc/call-policy";
import type { FileRouteHandlers, Representation } from "../rpc/file-route-handlers";
import type { RequestContext } from "../rpc/service-handlers";
import * as valid from "../voice-models/validation";
import { requestIdFor, type CallGate } from "./call-gate";
import type { CallGuard } from "./call-guard";
import { sendHttpError } from "./http-error";
import { parseRange } from "./http-range";

export interface FileRoutesDeps {
  gate: CallGate;
  handlers: FileRouteHandlers;
  /** Metrics, rate limits and audit for the download routes, which call no RPC handler. */
  guard: Pick<CallGuard, "guardCall">;
  log: Logger;
}

/** Renders a failed route's error reply (Connect's error JSON here; the REST paths' flat shape). */
export type ErrorRenderer = (res: http.ServerResponse, error: unknown, requestId: string, log: Logger) => void;

export interface FileRoutes {
  /** Takes the request when it is one of the /v1 file routes. */
  (req: http.IncomingMessage, res: http.ServerResponse): boolean;
  /** The export download for another path (the REST export path), errors rendered its way. */
  exportFile(req: http.IncomingMessage, res: http.ServerResponse, modelIdSegment: string, renderError: ErrorRenderer): void;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext, params: string[]) => Promise<void>;

/**
 * How a route is accounted for: uploads and imports run through the guarded RPC handlers
 * already; downloads are guarded here under the name of the RPC they mirror.
 */
type Guarded = { as: CallName; request: (params: string[]) => object } | undefined;
const viaRpcHandler: Guarded = undefined;

/**
 * Routing of the plain HTTP file routes (download with Range, upload, export with Range, import):
 * path parameters, the gate, ranges and streaming; what each route does is in
 * rpc/file-route-handlers.ts. Same token, access rules and error codes as the RPCs; errors are
 * Connect's error JSON ({code, message, details: [ErrorInfo]}).
 */
export function fileRoutes(deps: FileRoutesDeps): FileRoutes {
  const { handlers } = deps;
  const model = (params: string[]) => ({ modelId: params[0] });
  const download =
    (represent: (ctx: RequestContext, id: string) => Promise<Representation>): Route =>
    async (req, res, ctx, [id]) =>
      sendRanged(req, res, await represent(ctx, id));
  const upload: Route = async (req, res, ctx, [modelId]) => {
    const sha = req.headers["x-content-sha256"];
    const length = req.headers["content-length"];
    const declared = { sha256: typeof sha === "string" ? sha : undefined, sizeBytes: length === undefined ? undefined : BigInt(length) };
    sendJson(res, await handlers.uploadModelFile(ctx, modelId, req, declared));
  };
  const importFile: Route = async (req, res, ctx) => {
    const userId = new URL(req.url ?? "/", "http://local").searchParams.get("userId") ?? undefined;
    sendJson(res, await handlers.importVoiceModel(ctx, req, userId));
  };
  // The pattern's groups are path segments, named (for errors) in `params`.
  const routes: Array<[method: string, pattern: RegExp, params: string[], name: string, route: Route, guarded: Guarded]> = [
    ["PUT", /^\/v1\/voice-models\/([^/]+)\/file$/, ["modelId"], "UploadModelFile", upload, viaRpcHandler],
    ["GET", /^\/v1\/voice-models\/([^/]+)\/file$/, ["modelId"], "ReadModelFile", download(handlers.readModelFile), { as: "readModelFile", request: model }],
    ["GET", /^\/v1\/voice-models\/([^/]+)\/export$/, ["modelId"], "ExportVoiceModel", download(handlers.exportVoiceModel), { as: "exportVoiceModel", request: model }],
    ["POST", /^\/v1\/voice-models\/import$/, [], "ImportVoiceModel", importFile, viaRpcHandler],
    ["GET", /^\/v1\/backups\/([^/]+)$/, ["backupId"], "DownloadBackup", download(handlers.downloadBackup), { as: "downloadBackup", request: () => ({}) }],
  ];

  const router = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? "").split("?")[0];
    for (const [method, pattern, paramNames, name, route, guarded] of routes) {
      const match = pattern.exec(path);
      if (!match) continue;
      if (req.method !== method && !(method === "GET" && req.method === "HEAD")) continue;
      const guardedRoute: Route = guarded
        ? (rq, rs, ctx, params) => deps.guard.guardCall(guarded.as, guarded.request(params), ctx, () => route(rq, rs, ctx, params))
        : route;
      void serve(req, res, `HTTP ${name}`, guardedRoute, match.slice(1), paramNames, sendHttpError);
      return true;
    }
    return false;
  };
  const exportRoute = routes.find(([, , , name]) => name === "ExportVoiceModel");
  const [, , exportParams, exportName, exportServe, exportGuard] = exportRoute ?? [];
  if (!exportParams || !exportName || !exportServe || !exportGuard) throw new Error("the export route is missing");
  const exportFile: FileRoutes["exportFile"] = (req, res, modelIdSegment, renderError) => {
    const guarded: Route = (rq, rs, ctx, params) => deps.guard.guardCall(exportGuard.as, exportGuard.request(params), ctx, () => exportServe(rq, rs, ctx, params));
    void serve(req, res, `HTTP ${exportName}`, guarded, [modelIdSegment], exportParams, renderError);
  };
  return Object.assign(router, { exportFile });

  async function serve(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    method: string,
    route: Route,
    rawParams: string[],
    paramNames: string[],
    renderError: ErrorRenderer,
  ) {
    const header = req.headers["x-request-id"];
    const requestId = requestIdFor(typeof header === "string" ? header : undefined);
    res.setHeader("x-request-id", requestId);
    const controller = new AbortController();
    res.once("close", () => controller.abort());
    try {
      const ctx = await deps.gate.admit(
        {
          method,
          authorization: req.headers.authorization,
          requestIdHeader: requestId,
          clientAddress: req.socket.remoteAddress ?? "unknown",
          signal: controller.signal,
        },
        requestId,
      );
      await route(req, res, ctx, rawParams.map((segment, i) => pathParam(segment, paramNames[i])));
    } catch (error) {
      if (!res.headersSent) req.resume();
      renderError(res, error, requestId, deps.log);
    }
  }
}

/** A path segment, percent-decoded; one that is not valid percent-encoded UTF-8 is refused. */
function pathParam(segment: string, field: string): string {
  let value: string;
  try {
    value = decodeURIComponent(segment);
  } catch {
    throw invalidArgument(field, `path segment ${JSON.stringify(segment.slice(0, 64))} is not valid percent-encoded UTF-8`);
  }
  // Every id in these paths is a UUID; anything else never reaches a query.
  return valid.uuid(value, field);
}

function sendJson(res: http.ServerResponse, body: unknown): void {
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
}

/** Sends a representation with Range / If-Range support and back-pressure. */
async function sendRanged(req: http.IncomingMessage, res: http.ServerResponse, representation: Representation) {
  const { sizeBytes: size, etag, contentType, filename } = representation;
  if (filename) res.setHeader("content-disposition", `attachment; filename="${filename}"`);
  const ifRange = req.headers["if-range"];
  const range = ifRange === undefined || ifRange === etag ? parseRange(req.headers.range, size) : undefined;
  const headers: http.OutgoingHttpHeaders = { "content-type": contentType, "accept-ranges": "bytes", etag };
  if (range === "unsatisfiable") {
    res.writeHead(416, { ...headers, "content-range": `bytes */${size}` }).end();
    return;
  }
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  if (range) headers["content-range"] = `bytes ${start}-${end}/${size}`;
  headers["content-length"] = String(size === 0 ? 0 : end - start + 1);
  if (req.method === "HEAD" || size === 0) {
    res.writeHead(range ? 206 : 200, headers).end();
    return;
  }
  // Pull the first bytes before sending the status, so an early failure (bad key, corrupt first
  // chunk) can still become a proper error reply.
  const it = representation.bytes(start, end)[Symbol.asyncIterator]();
  const first = await it.next();
  res.writeHead(range ? 206 : 200, headers);
  const rest = (async function* () {
    if (!first.done) yield first.value;
    for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
  })();
  await pipeline(Readable.from(rest), res);
}

