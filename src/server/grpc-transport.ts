import { create, fromBinary, toBinary, type DescMessage, type DescService, type Message } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import type http2 from "node:http2";
import type { Logger } from "pino";
import { StatusSchema } from "../../gen/google/rpc/status_pb";
import { AppError, invalidArgument } from "../errors";
import type { CallEnd, CallRegistry } from "./call-end";
import { requestIdFor, type CallGate, type IncomingCall } from "./call-gate";
import { errorReply, errorStatus } from "../rpc/error-reply";
import { GrpcReplyWriter } from "./grpc-reply-writer";
import { refuseProtoKey } from "./text-check";
import { unimplemented, type AnyClientStream, type AnyServerStream, type AnyUnary } from "./handlers";
import type { RequestContext } from "../rpc/service-handlers";
import { wireEncoders } from "../rpc/voice-model-wire";

/** The part of a grpc-js call every kind shares. */
type SurfaceCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata" | "getPeer" | "getDeadline"> & NodeJS.EventEmitter;

const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Encoded bytes of message objects already sent; the objects are never mutated once replied. */
const encodedMessages = new WeakMap<object, Buffer>();

function encodeOnce(schema: DescMessage, message: Message): Buffer {
  let bytes = encodedMessages.get(message);
  if (!bytes) {
    const fast = wireEncoders.get(schema.typeName);
    bytes = asBuffer(fast ? fast(message as never) : toBinary(schema, message));
    encodedMessages.set(message, bytes);
  }
  return bytes;
}

/** A message object is encoded once (encodeOnce); a plain init object, afresh. */
function encode(schema: DescMessage, value: unknown): Buffer {
  return (value as Partial<Message>).$typeName === schema.typeName
    ? encodeOnce(schema, value as Message)
    : asBuffer(toBinary(schema, create(schema, value as never)));
}

/**
 * Encodes replies with protobuf-es, once per message object: a handler that hands out the same
 * message again (WhoAmI's reply for a caller, a cached model in a reply's top-level message
 * fields) skips its encoding. A field may appear anywhere in the wire form, so a reply with such
 * fields is its other fields (if any) followed by them, written into one buffer.
 */
function serializer(schema: DescMessage) {
  const messageFields = schema.fields.filter(
    (f) => f.oneof === undefined && (f.fieldKind === "message" || (f.fieldKind === "list" && f.listKind === "message")),
  );
  const messageFieldNames = new Set(messageFields.map((f) => f.localName));
  return (reply: unknown): Buffer => {
    const r = reply as Record<string, unknown>;
    if (messageFields.length === 0 || r.$typeName === schema.typeName) return encode(schema, r);
    let rest: Record<string, unknown> | undefined;
    for (const key in r) if (!messageFieldNames.has(key) && r[key] !== undefined) (rest ??= {})[key] = r[key];
    const head = rest ? toBinary(schema, create(schema, rest as never)) : undefined;
    const tail: Array<[number, Buffer]> = [];
    for (const field of messageFields) {
      const value = r[field.localName];
      if (value === undefined) continue;
      const items = field.fieldKind === "list" ? (value as unknown[]) : [value];
      for (const item of items) tail.push([field.number, encode(field.message!, item)]);
    }
    return concatFields(head, tail);
  };
}

/** `head` then each (field number, bytes) as a length-delimited field, in one buffer. */
function concatFields(head: Uint8Array | undefined, tail: Array<[number, Buffer]>): Buffer {
  let size = head?.byteLength ?? 0;
  for (const [number, bytes] of tail) size += varintSize((number << 3) | WireType.LengthDelimited) + varintSize(bytes.byteLength) + bytes.byteLength;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  if (head) {
    out.set(head);
    at = head.byteLength;
  }
  for (const [number, bytes] of tail) {
    at = writeVarint(out, at, (number << 3) | WireType.LengthDelimited);
    at = writeVarint(out, at, bytes.byteLength);
    at += bytes.copy(out, at);
  }
  return out;
}

const varintSize = (n: number) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);

function writeVarint(out: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    out[at++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[at++] = n;
  return at;
}

/** Stands in for a request message that does not decode (grpc-js would answer INTERNAL). */
class Undecodable {
  constructor(readonly error: unknown) {}
}

function deserializer(schema: DescMessage) {
  return (bytes: Buffer) => {
    try {
      refuseProtoKey(bytes, false);
      return fromBinary(schema, bytes);
    } catch (error) {
      return new Undecodable(error);
    }
  };
}

/** The request message, or INVALID_ARGUMENT when its bytes did not decode. */
function decoded<T>(message: T): T {
  if (!(message instanceof Undecodable)) return message;
  if (message.error instanceof AppError) throw message.error;
  throw invalidArgument("request", `the message does not decode: ${message.error instanceof Error ? message.error.message : String(message.error)}`);
}

/** A grpc-js error carrying google.rpc.Status with one ErrorInfo, plus the request id. */
function grpcError(error: unknown, requestId: string, log: Logger): grpc.ServerErrorResponse {
  const reply = errorReply(error, requestId, log);
  const { error: appError, retryAfter } = reply;
  const status = errorStatus(reply);
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", asBuffer(toBinary(StatusSchema, status)));
  metadata.set("x-request-id", requestId);
  if (retryAfter) metadata.set("retry-after", retryAfter);
  return Object.assign(new Error(appError.message), { code: appError.rpcCode as number, details: appError.message, metadata });
}

/**
 * What the gate needs of a grpc-js call. The peer address and the AbortSignal are worked out on
 * first use: most calls never ask, and both (a Proxy-wrapped socket read, an AbortController per
 * call) are a measurable share of a cheap RPC's cost.
 */
class GrpcIncomingCall implements IncomingCall {
  readonly authorization: string | undefined;
  readonly requestIdHeader: string | undefined;
  private controller: AbortController | undefined;

  constructor(
    private readonly call: SurfaceCall & { cancelled: boolean },
    readonly method: string,
    readonly end: CallEnd,
  ) {
    this.authorization = firstText(call.metadata, "authorization");
    this.requestIdHeader = firstText(call.metadata, "x-request-id");
  }

  get clientAddress() {
    return this.call.getPeer();
  }

  get signal() {
    if (!this.controller) {
      const controller = (this.controller = new AbortController());
      // grpc-js emits "cancelled" on client cancel and on an expired deadline.
      if (this.call.cancelled) controller.abort();
      else this.call.once("cancelled", () => controller.abort());
      this.end.onEnd((reason) => controller.abort(reason));
    }
    return this.controller.signal;
  }
}

function firstText(metadata: grpc.Metadata, key: string): string | undefined {
  const value = metadata.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

/**
 * x-request-id travels in the trailers: sending it as an early header (sendMetadata) cost an
 * eighth of a cheap call's CPU in profiles. Errors carry it in their trailers too.
 */
function requestIdTrailer(requestId: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("x-request-id", requestId);
  return metadata;
}

/** The call's deadline in epoch ms (grpc-js gives Infinity when the client set none). */
function deadlineOf(call: SurfaceCall): number | undefined {
  const deadline = call.getDeadline();
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}

/**
 * The HTTP/2 stream under a grpc-js call. grpc-js keeps it private (the call's `call`, down its
 * `nextCall` chain, in the pinned 1.14): it is needed to reset a stream whose trailers cannot be
 * sent because its reader never opens its flow-control window.
 */
function http2StreamOf(call: object): http2.ServerHttp2Stream | undefined {
  let at = (call as { call?: unknown }).call as { stream?: http2.ServerHttp2Stream; nextCall?: unknown } | undefined;
  for (let depth = 0; at && depth < 8; depth++) {
    if (at.stream && typeof at.stream.close === "function") return at.stream;
    at = at.nextCall as typeof at;
  }
  return undefined;
}

/** Resets the call's HTTP/2 stream if it is still open after `graceMs` (0: at once). */
function resetUnlessClosed(call: object, graceMs: number): void {
  const stream = http2StreamOf(call);
  if (!stream || stream.closed) return;
  const reset = () => {
    if (!stream.closed && !stream.destroyed) stream.close(0x8 /* NGHTTP2_CANCEL */);
  };
  if (graceMs === 0) reset();
  else setTimeout(reset, graceMs).unref();
}

/**
 * Replies (64 KiB file chunks) a stream takes from its handler ahead of the connection: with one,
 * each message waited for the previous one's write callback and the handler, and a gRPC export ran
 * at 0.52-0.57 of the read, decrypt and hash pipeline (0.64-0.68 with four; bench/export-bench.ts).
 * Only one of them is ever handed to grpc-js (GrpcReplyWriter), so a call that ends early sends
 * its trailers behind at most one message.
 */
const MESSAGES_IN_FLIGHT = 4;

export interface GrpcServiceOptions {
  /** The calls in flight (deadlines, shutdown). */
  registry: CallRegistry;
  /** A streamed reply whose reader takes nothing for this long is ended. */
  streamStallTimeoutMs: number;
}

/** An async iterable over a grpc-js client stream, so client-streaming handlers see one shape. */
async function* readStream<T>(stream: AsyncIterable<unknown>): AsyncIterable<T> {
  for await (const message of stream) yield decoded(message) as T;
}

/**
 * Builds a grpc-js service definition and implementation from a protobuf-es service descriptor
 * and our transport-free handlers: protobuf-es serializes, the CallGate authenticates.
 */
export function grpcService(
  service: DescService,
  handlers: Record<string, unknown>,
  gate: CallGate,
  log: Logger,
  options: GrpcServiceOptions,
): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const implementation: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const path = `/${service.typeName}/${method.name}`;
    const name = `${service.typeName}/${method.name}`;
    const handler = handlers[method.localName] ?? unimplemented(name);
    definition[method.name] = {
      path,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input),
      requestDeserialize: deserializer(method.input),
      responseSerialize: serializer(method.output),
      responseDeserialize: deserializer(method.output),
      originalName: method.localName,
    };
    const admit = (call: SurfaceCall & { cancelled: boolean }): [RequestContext | Promise<RequestContext>, string, CallEnd] => {
      const end = options.registry.begin(deadlineOf(call));
      call.once("cancelled", () => end.abandon());
      const incoming = new GrpcIncomingCall(call, name, end);
      const requestId = requestIdFor(incoming.requestIdHeader);
      return [gate.admit(incoming, requestId), requestId, end];
    };
    switch (method.methodKind) {
      case "unary":
        implementation[method.name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const [ctx, requestId, end] = admit(call);
          let replied: Promise<unknown>;
          try {
            replied = ctx instanceof Promise ? ctx.then((c) => (handler as AnyUnary)(decoded(call.request), c)) : (handler as AnyUnary)(decoded(call.request), ctx);
          } catch (error) {
            replied = Promise.reject(error);
          }
          end
            .race(replied)
            .then(
              (reply) => callback(null, reply, requestIdTrailer(requestId)),
              // A cancelled call (the client left, or grpc-js answered its deadline) has no one to tell.
              (error) => call.cancelled || callback(grpcError(error, requestId, log)),
            )
            .finally(() => end.done());
        };
        break;
      case "server_streaming":
        implementation[method.name] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
          const [ctx, requestId, end] = admit(call);
          // A stream holds its flow-control window plus those messages (grpc-js alone would queue
          // 16 before reporting back-pressure), and a reader that takes nothing stalls it.
          const out = new GrpcReplyWriter(call, end, MESSAGES_IN_FLIGHT, options.streamStallTimeoutMs);
          (async () => {
            const replies = (handler as AnyServerStream)(decoded(call.request), await end.race(Promise.resolve(ctx)))[Symbol.asyncIterator]();
            try {
              for (;;) {
                const next = await end.race(replies.next());
                if (next.done) break;
                if (call.cancelled) return;
                await out.write(next.value);
              }
              await out.flushed();
              call.end(requestIdTrailer(requestId));
            } finally {
              out.drop();
              // Stops the handler's reads (its finally blocks run) when the stream ends early.
              replies.return?.(undefined).catch(() => undefined);
            }
          })()
            .catch((error) => {
              if (call.cancelled) return;
              call.emit("error", grpcError(error, requestId, log));
              // Trailers queue behind unsent data: a stream whose reader has not taken them within
              // two seconds (a stalled reader) is reset.
              resetUnlessClosed(call, 2_000);
            })
            .finally(() => {
              // grpc-js answers an expired grpc-timeout itself, its trailers queued behind the
              // same unsent data: a slow reader would otherwise keep the stream for as long as the
              // rest of the file takes to drain.
              if (call.cancelled) resetUnlessClosed(call, 2_000);
              end.done();
            });
        };
        break;
      case "client_streaming":
        implementation[method.name] = (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const [ctx, requestId, end] = admit(call);
          // An ended call stops reading the upload: the handler's loop sees the reason.
          end.onEnd((reason) => call.destroy(reason));
          end
            .race(Promise.resolve(ctx).then((c) => (handler as AnyClientStream)(readStream(call), c)))
            .then(
              (reply) => callback(null, reply, requestIdTrailer(requestId)),
              (error) => call.cancelled || callback(grpcError(error, requestId, log)),
            )
            .finally(() => end.done());
        };
        break;
      default:
        throw new Error(`${name}: bidi streaming is not supported`);
    }
  }
  return { definition: definition as grpc.ServiceDefinition, implementation };
}
