import { create, isMessage, type DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type ContextValues } from "@connectrpc/connect";
import {
  compressionNegotiate,
  createMethodSerializationLookup,
  type Compression,
  type UniversalServerRequest,
  type UniversalServerResponse,
} from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  errorFromJsonBytes,
  errorToJsonBytes,
  headerUnaryAcceptEncoding,
  headerUnaryEncoding,
  parseTimeout,
} from "@connectrpc/connect/protocol-connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { setTrailerStatus, trailerFlag, trailerParse, trailerSerialize } from "@connectrpc/connect/protocol-grpc-web";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type http from "node:http";
import type { Logger } from "pino";
import { AppError } from "../errors";
import { requestIdFor } from "./call-gate";
import { connectError, type DirectUnary } from "./connect-transport";
import { sendHttpError } from "./http-error";
import { MAX_MESSAGE_BYTES, readBody } from "./request-body";
import { refuseProtoKey } from "./text-check";

export interface ConnectAdapterOptions extends ConnectRouterOptions {
  /** Registers the services; returns their unary calls by request path, for the direct path. */
  routes: (router: ConnectRouter) => ReadonlyMap<string, DirectUnary>;
  contextValues?: (req: http.IncomingMessage) => ContextValues;
  log: Logger;
  /** A streamed reply whose reader takes nothing for this long is cut off (default 20 s). */
  streamStallTimeoutMs?: number;
}

/**
 * Serves a ConnectRouter's handlers on node:http: the job of connect-node's `connectNodeAdapter`,
 * with which a cached GetActiveVoiceModel over Connect JSON took about 300 µs of server CPU here,
 * where a bare node:http server answers JSON at about 25,000 req/s. The protocol stays connect's
 * own (its router and handlers); this glue does less work per call (a median of 230 against
 * 300 µs in alternating bench runs):
 * - a unary call's body is collected with plain 'data' events and handed to connect as one chunk
 *   (connect-node wraps every body, chunk by chunk, in a down-levelled async generator); connect
 *   still reads, decompresses, limits and parses it;
 * - the request's abort signal fires only if the client leaves before the reply is written, and
 *   with a ConnectError: Node builds a DOMException with a stack trace for each reason-less abort,
 *   and connect-node aborted every request when its response closed;
 * - a reply whose single chunk is the whole body goes out in one writeHead + end;
 * - a unary Connect JSON POST with an uncompressed body, what every browser and the app send, is
 *   served directly (serveDirect): connect's own pieces parse its timeout, negotiate the reply's
 *   compression and (de)serialize, but no universal request, handler context or abort signal is
 *   built for it. A cached GetActiveVoiceModel took about 210 µs through connect's handler.
 */
export function createConnectAdapter(options: ConnectAdapterOptions): http.RequestListener {
  const readMaxBytes = options.readMaxBytes ?? MAX_MESSAGE_BYTES;
  const stallMs = options.streamStallTimeoutMs ?? 20_000;
  const router = createConnectRouter({ acceptCompression: ACCEPT_COMPRESSION, ...options, readMaxBytes });
  const direct = options.routes(router);
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const directRoutes = new Map<string, DirectRoute>();
  const limits = { readMaxBytes, writeMaxBytes: 0xffffffff };
  for (const [path, run] of direct) {
    const method = handlers.get(path)?.method;
    if (method) directRoutes.set(path, { method, run, serialization: createMethodSerializationLookup(method, options.binaryOptions, options.jsonOptions, limits) });
  }
  return (req, res) => {
    const url = req.url ?? "";
    const query = url.indexOf("?");
    const path = query < 0 ? url : url.slice(0, query);
    const handler = handlers.get(path);
    const requestId = requestIdFor(firstHeader(req.headers["x-request-id"]));
    if (!handler) {
      req.resume();
      sendHttpError(res, new AppError("ROUTE_NOT_FOUND", `no RPC or route at ${JSON.stringify(url.slice(0, 200))}`), requestId, options.log);
      return;
    }
    const controller = new AbortController();
    const onGone = (error?: Error) => {
      if (res.writableFinished) return;
      controller.abort(error ? ConnectError.from(error, Code.Aborted) : new ConnectError("the client closed the connection", Code.Canceled));
    };
    req.once("error", onGone);
    res.once("close", () => onGone());
    const request = (body: UniversalServerRequest["body"]): UniversalServerRequest => ({
      httpVersion: req.httpVersion,
      method: req.method ?? "",
      url: `http://${req.headers.host ?? "localhost"}${url}`,
      header: webHeaders(req.headers),
      body,
      signal: controller.signal,
      contextValues: options.contextValues?.(req),
    });
    const serve = (body: UniversalServerRequest["body"]) =>
      handler(request(body))
        .then((reply) => withErrorInfo(reply, requestId, options.log))
        .then((reply) => writeReply(reply, res, stallMs))
        .catch((error: unknown) => {
          // Mid-stream (a stalled reader among them) the connection goes: what is buffered for it is freed.
          if (res.headersSent || ConnectError.from(error).code === Code.Aborted) res.destroy();
          else sendHttpError(res, error, requestId, options.log);
        });
    if (handler.method.methodKind !== "unary") return serve(req);
    readBody(req, readMaxBytes).then(
      (bytes) => {
        const type = req.headers["content-type"] ?? "";
        try {
          if (type.startsWith("application/json") || type.startsWith("application/proto")) refuseProtoKey(bytes, type.includes("json"));
        } catch (error) {
          return sendHttpError(res, error, requestId, options.log);
        }
        const route = directRoutes.get(path);
        if (route && req.method === "POST" && UNARY_JSON.test(type) && isIdentity(req.headers["content-encoding"])) {
          return serveDirect(req, res, route, bytes, requestId, controller.signal, options);
        }
        return serve(oneChunk(bytes));
      },
      (error: Error) => {
        onGone(error);
        res.destroy();
      },
    );
  };
}

const ACCEPT_COMPRESSION: Compression[] = [compressionGzip, compressionBrotli];
/** Replies smaller than this go uncompressed (connect's own default). */
const COMPRESS_MIN_BYTES = 1024;
/** The unary Connect JSON content types (connect's contentTypeUnaryRegExp, JSON only). */
const UNARY_JSON = /^application\/json(?:; ?charset=utf-?8)?$/i;
const isIdentity = (encoding: string | undefined) => encoding === undefined || encoding === "" || encoding === "identity";

interface DirectRoute {
  method: DescMethod;
  run: DirectUnary;
  serialization: ReturnType<typeof createMethodSerializationLookup>;
}

/**
 * A unary Connect JSON call served without connect's handler, with connect's rules: the timeout
 * header, the JSON (de)serialization and its errors, the reply's compression, and errors as
 * Connect error JSON with their HTTP status.
 */
async function serveDirect(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  route: DirectRoute,
  bytes: Uint8Array,
  requestId: string,
  signal: AbortSignal,
  options: ConnectAdapterOptions,
): Promise<void> {
  const header: http.OutgoingHttpHeaders = { "content-type": contentTypeUnaryJson };
  let status = 200;
  let body: Uint8Array;
  const compression = compressionNegotiate(ACCEPT_COMPRESSION, null, firstHeader(req.headers[headerUnaryAcceptEncoding.toLowerCase()]) ?? null, headerUnaryAcceptEncoding);
  try {
    body = route.serialization.getO(false).serialize(await runDirect(req, route, bytes, requestId, signal));
  } catch (error) {
    if (res.destroyed) return;
    // The call's own errors come rendered; the protocol's (timeout header, undecodable JSON) are rendered here.
    const rendered = error instanceof ConnectError && error.details.length > 0 ? error : connectError(error, requestId, options.log);
    status = codeToHttpStatus(rendered.code);
    rendered.metadata.forEach((value, key) => (header[key] = value));
    body = errorToJsonBytes(rendered, options.jsonOptions ?? {});
  }
  if (res.destroyed) return;
  if (compression.response && body.byteLength >= COMPRESS_MIN_BYTES) {
    body = await compression.response.compress(body);
    header[headerUnaryEncoding.toLowerCase()] = compression.response.name;
  }
  header["content-length"] = body.byteLength;
  res.writeHead(status, header).end(body);
}

/** The reply message of a direct call (see serveDirect). */
async function runDirect(req: http.IncomingMessage, { method, run, serialization }: DirectRoute, bytes: Uint8Array, requestId: string, signal: AbortSignal) {
  const timeout = parseTimeout(firstHeader(req.headers["connect-timeout-ms"]) ?? null, Number.MAX_SAFE_INTEGER);
  if (timeout.error) throw timeout.error;
  const input = serialization.getI(false).parse(bytes);
  const output = await run(input, {
    authorization: firstHeader(req.headers.authorization),
    requestId,
    clientAddress: req.socket.remoteAddress ?? "unknown",
    timeoutMs: timeout.timeoutMs,
    signal,
  });
  return isMessage(output, method.output) ? output : create(method.output, output as never);
}

/**
 * Connect answers a body it cannot decode (bad JSON, an unknown field, too large) itself, before
 * any of our code runs: such an error is rendered again by our renderer, so it carries the same
 * ErrorInfo (reason, requestId, timestamp) as every other error.
 */
async function withErrorInfo(reply: UniversalServerResponse, requestId: string, log: Logger): Promise<UniversalServerResponse> {
  const type = reply.header?.get("content-type") ?? "";
  if (reply.status < 400) return type.startsWith("application/grpc-web") ? grpcWebWithErrorInfo(reply, requestId, log) : reply;
  let status = reply.status;
  let error: unknown;
  if (reply.body && type.startsWith("application/json")) {
    const pieces: Uint8Array[] = [];
    for await (const piece of reply.body) pieces.push(piece);
    const bytes = Buffer.concat(pieces);
    const parsed = errorFromJsonBytes(bytes, undefined, new ConnectError("undecodable error reply", Code.Internal));
    if (parsed.details.length > 0) return { ...reply, body: oneChunk(bytes) };
    error = parsed;
    status = 0;
  } else if (reply.status === 405 || reply.status === 415) {
    // No body at all: the method or content type is not one of the protocol's.
    const what = reply.status === 405 ? "this method is not allowed for an RPC (use POST)" : "unsupported content-type for an RPC";
    error = new AppError("INVALID_ARGUMENT", what, { field: reply.status === 405 ? "method" : "content-type" });
  } else {
    return reply;
  }
  const rendered = connectError(error, requestId, log);
  const body = errorToJsonBytes(rendered, {});
  const header = new Headers(reply.header);
  header.set("content-type", "application/json");
  header.set("content-length", String(body.byteLength));
  return { ...reply, status: status || codeToHttpStatus(rendered.code), header, body: oneChunk(body) };
}

/**
 * The gRPC-Web form of the same: a reply that is one trailer frame whose status connect set
 * itself (no grpc-status-details-bin) gets our status details. Other replies pass through as
 * they are (only their first chunk is looked at).
 */
async function grpcWebWithErrorInfo(reply: UniversalServerResponse, requestId: string, log: Logger): Promise<UniversalServerResponse> {
  if (!reply.body) return reply;
  const chunks = reply.body[Symbol.asyncIterator]();
  const first = await chunks.next();
  const rest = async function* (head: Uint8Array | undefined) {
    if (head) yield head;
    for (let next = await chunks.next(); !next.done; next = await chunks.next()) yield next.value;
  };
  if (first.done) return { ...reply, body: rest(undefined) };
  const bytes = first.value;
  const onlyTrailer = bytes.byteLength >= 5 && bytes[0] === trailerFlag && Buffer.from(bytes).readUInt32BE(1) === bytes.byteLength - 5;
  if (!onlyTrailer) return { ...reply, body: rest(bytes) };
  const trailer = trailerParse(bytes.subarray(5));
  const error = findTrailerError(trailer);
  if (!error || trailer.has("grpc-status-details-bin")) return { ...reply, body: rest(bytes) };
  await chunks.return?.();
  const serialized = trailerSerialize(setTrailerStatus(new Headers(), connectError(error, requestId, log)));
  const frame = Buffer.alloc(5 + serialized.byteLength);
  frame[0] = trailerFlag;
  frame.writeUInt32BE(serialized.byteLength, 1);
  frame.set(serialized, 5);
  const header = new Headers(reply.header);
  header.delete("content-length");
  return { ...reply, header, body: oneChunk(frame) };
}

const firstHeader = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value);

async function* oneChunk(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

function webHeaders(incoming: http.IncomingHttpHeaders): Headers {
  const header = new Headers();
  for (const key in incoming) {
    const value = incoming[key];
    if (typeof value === "string") header.append(key, value);
    else if (value) for (const v of value) header.append(key, v);
  }
  return header;
}

function nodeHeaders(header: Headers | undefined): http.OutgoingHttpHeaders {
  const out: http.OutgoingHttpHeaders = {};
  header?.forEach((value, key) => (out[key] = key === "set-cookie" ? header.getSetCookie() : value));
  return out;
}

async function writeReply(reply: UniversalServerResponse, res: http.ServerResponse, stallMs: number): Promise<void> {
  const chunks = reply.body?.[Symbol.asyncIterator]();
  const headers = nodeHeaders(reply.header);
  let chunk = await chunks?.next();
  // Headers go out after the first chunk, so the implementation could still set some.
  if (!chunks || !chunk || chunk.done) {
    res.writeHead(reply.status, headers).end();
    return;
  }
  if (Number(headers["content-length"]) === chunk.value.byteLength) {
    res.writeHead(reply.status, headers).end(chunk.value);
    await chunks.return?.();
    return;
  }
  res.writeHead(reply.status, headers);
  try {
    for (; !chunk.done; chunk = await chunks.next()) {
      if (!res.write(chunk.value) || res.destroyed) await drained(res, stallMs);
    }
    if (reply.trailer) res.addTrailers(nodeHeaders(reply.trailer));
    res.end();
  } catch (error) {
    throw ConnectError.from(error, Code.Aborted);
  } finally {
    // Ends the implementation's stream (its finally blocks run) if the client left before the end.
    chunks.return?.().catch(() => undefined);
  }
}

function drained(res: http.ServerResponse, stallMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (res.destroyed) return reject(new ConnectError("the client closed the connection", Code.Aborted));
    const stalled = setTimeout(() => {
      res.off("drain", onDrain).off("close", onClose);
      reject(new ConnectError(`the reader took nothing for ${stallMs} ms`, Code.Aborted));
    }, stallMs);
    const onDrain = () => {
      clearTimeout(stalled);
      res.off("close", onClose);
      resolve();
    };
    const onClose = () => {
      clearTimeout(stalled);
      res.off("drain", onDrain);
      reject(new ConnectError("the client closed the connection", Code.Aborted));
    };
    res.once("drain", onDrain);
    res.once("close", onClose);
  });
}
