import { fromBinary, toBinary, toJson, create } from "@bufbuild/protobuf";
import type http from "node:http";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "pino";
import {
  ExportHeaderSchema,
  ImportVoiceModelResponseSchema,
  UploadModelFileHeaderSchema,
  UploadModelFileResponseSchema,
} from "../../gen/voicemodel/v1/model_files_pb";
import type { CallName } from "../rpc/call-policy";
import type { VoiceModelHandlers } from "../rpc/voice-model-handlers";
import { invalidArgument } from "../errors";
import * as valid from "../voice-models/validation";
import { exportBytes, exportLayout, readExportStart } from "../model-files/export-file";
import type { ModelFileService } from "../model-files/model-file-service";
import type { BackupService } from "../backups/backup-service";
import { exportHeader, type UsageLookup } from "../rpc/model-file-handlers";
import { requestIdFor, type CallGate } from "./call-gate";
import type { CallGuard } from "./call-guard";
import { sendHttpError } from "./http-error";
import { parseRange } from "./http-range";
import type { RequestContext } from "../rpc/service-handlers";

export interface FileRoutesDeps {
  gate: CallGate;
  files: ModelFileService;
  backups: BackupService;
  usageOf?: UsageLookup;
  /**
   * The served (guarded) RPC handlers: uploads and imports over HTTP go through them, so rate
   * limits, metrics and refusal audit apply exactly as over gRPC and Connect.
   */
  rpc: Pick<VoiceModelHandlers, "uploadModelFile" | "importVoiceModel">;
  /** Metrics, rate limits and audit for the download routes, which call no RPC handler. */
  guard: Pick<CallGuard, "guardCall">;
  log: Logger;
}

type Route = (req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext, params: string[]) => Promise<void>;

/**
 * How a route is accounted for: uploads and imports run through the guarded RPC handlers
 * already; downloads are guarded here under the name of the RPC they mirror.
 */
type Guarded = { as: CallName; request: (params: string[]) => object } | undefined;
const viaRpcHandler: Guarded = undefined;

/**
 * Plain HTTP for model files, where Connect JSON would base64 the bytes: download (with Range),
 * upload, export (with Range), import. Same token, access rules and error codes as the RPCs;
 * errors are Connect's error JSON ({code, message, details: [ErrorInfo]}).
 */
export function fileRoutes(deps: FileRoutesDeps): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  const { files } = deps;
  const model = (params: string[]) => ({ modelId: params[0] });
  // The pattern's groups are path segments, named (for errors) in `params`.
  const routes: Array<[method: string, pattern: RegExp, params: string[], name: string, route: Route, guarded: Guarded]> = [
    ["PUT", /^\/v1\/voice-models\/([^/]+)\/file$/, ["modelId"], "UploadModelFile", upload, viaRpcHandler],
    ["GET", /^\/v1\/voice-models\/([^/]+)\/file$/, ["modelId"], "ReadModelFile", download, { as: "readModelFile", request: model }],
    ["GET", /^\/v1\/voice-models\/([^/]+)\/export$/, ["modelId"], "ExportVoiceModel", exportFile, { as: "exportVoiceModel", request: model }],
    ["POST", /^\/v1\/voice-models\/import$/, [], "ImportVoiceModel", importFile, viaRpcHandler],
    ["GET", /^\/v1\/backups\/([^/]+)$/, ["backupId"], "DownloadBackup", downloadBackup, { as: "downloadBackup", request: () => ({}) }],
  ];

  async function downloadBackup(req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext, [backupId]: string[]) {
    const backup = await deps.backups.get(ctx, backupId);
    res.setHeader("content-disposition", `attachment; filename="voice-models-backup-${backup.id}.vmb"`);
    await sendRanged(req, res, backup.sizeBytes, `"${backup.sha256}"`, "application/vnd.voicemodel.backup", (start, end) =>
      deps.backups.bytes(backup, start === 0 && end === backup.sizeBytes - 1 ? undefined : { start, end }),
    );
  }

  async function upload(req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext, [modelId]: string[]) {
    const sha = req.headers["x-content-sha256"];
    const length = req.headers["content-length"];
    const messages = (async function* () {
      yield {
        part: {
          case: "header" as const,
          value: create(UploadModelFileHeaderSchema, {
            modelId,
            sha256: typeof sha === "string" ? sha : undefined,
            sizeBytes: length === undefined ? undefined : BigInt(length),
          }),
        },
      };
      for await (const chunk of req) yield { part: { case: "chunk" as const, value: chunk as Buffer } };
    })();
    const reply = await deps.rpc.uploadModelFile(messages as never, ctx);
    const body = toJson(UploadModelFileResponseSchema, create(UploadModelFileResponseSchema, reply));
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  }

  async function download(req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext, [modelId]: string[]) {
    const { file } = await files.fileForUse(ctx, modelId);
    const etag = `"${file.sha256}"`;
    await sendRanged(req, res, file.sizeBytes, etag, "application/octet-stream", (start, end) =>
      files.bytes(file, start === 0 && end === file.sizeBytes - 1 ? undefined : { start, end }),
    );
  }

  async function exportFile(req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext, [modelId]: string[]) {
    const { header, model, file } = await exportHeader(ctx, files, modelId, deps.usageOf);
    const layout = exportLayout(toBinary(ExportHeaderSchema, header), file.sizeBytes, file.sha256);
    // Changes with the model (version) and its bytes: a resume with If-Range never mixes versions.
    const etag = `"${file.sha256.slice(0, 32)}-v${model.version}-${layout.total}"`;
    res.setHeader("content-disposition", `attachment; filename="voice-model-${model.id}.vmx"`);
    await sendRanged(req, res, layout.total, etag, "application/vnd.voicemodel.export", (start, end) =>
      exportBytes(layout, start, end, (range) => files.bytes(file, range.start === 0 && range.end === file.sizeBytes - 1 ? undefined : range)),
    );
  }

  async function importFile(req: http.IncomingMessage, res: http.ServerResponse, ctx: RequestContext) {
    const url = new URL(req.url ?? "/", "http://local");
    const { headerBytes, reader } = await readExportStart(req);
    let header;
    try {
      header = fromBinary(ExportHeaderSchema, headerBytes);
    } catch {
      throw invalidArgument("body", "the export header does not decode");
    }
    const size = Number(header.sizeBytes);
    const userId = url.searchParams.get("userId") ?? undefined;
    // The file as ImportVoiceModel messages: header, chunks, and the trailer only when the body
    // ends with exactly the 32-byte checksum (else the handler refuses it as truncated).
    const messages = (async function* () {
      yield { userId, part: { case: "header" as const, value: header } };
      let received = 0;
      for await (const chunk of reader.stream(size)) {
        received += chunk.length;
        yield { part: { case: "chunk" as const, value: chunk } };
      }
      const sha = await reader.read(32);
      const extra = await reader.read(1);
      if (sha.length === 32 && extra.length === 0 && received === size) {
        yield { part: { case: "trailer" as const, value: { sha256: sha.toString("hex"), sizeBytes: BigInt(received) } } };
      }
    })();
    const reply = await deps.rpc.importVoiceModel(messages as never, ctx);
    const body = toJson(ImportVoiceModelResponseSchema, create(ImportVoiceModelResponseSchema, reply));
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  }

  return (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    for (const [method, pattern, paramNames, name, route, guarded] of routes) {
      const match = pattern.exec(path);
      if (!match) continue;
      if (req.method !== method && !(method === "GET" && req.method === "HEAD")) continue;
      const guardedRoute: Route = guarded
        ? (rq, rs, ctx, params) => deps.guard.guardCall(guarded.as, guarded.request(params), ctx, () => route(rq, rs, ctx, params))
        : route;
      void serve(req, res, `HTTP ${name}`, guardedRoute, match.slice(1), paramNames);
      return true;
    }
    return false;
  };

  async function serve(req: http.IncomingMessage, res: http.ServerResponse, method: string, route: Route, rawParams: string[], paramNames: string[]) {
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
      sendHttpError(res, error, requestId, deps.log);
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

/** Sends a representation with Range / If-Range support and back-pressure. */
async function sendRanged(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  size: number,
  etag: string,
  contentType: string,
  body: (start: number, end: number) => AsyncIterable<Uint8Array>,
) {
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
  const it = body(start, end)[Symbol.asyncIterator]();
  const first = await it.next();
  res.writeHead(range ? 206 : 200, headers);
  const rest = (async function* () {
    if (!first.done) yield first.value;
    for (let next = await it.next(); !next.done; next = await it.next()) yield next.value;
  })();
  await pipeline(Readable.from(rest), res);
}

