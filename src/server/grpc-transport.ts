import { create, fromBinary, toBinary, type DescMessage, type DescService, type Message } from "@bufbuild/protobuf";
import { WireType } from "@bufbuild/protobuf/wire";
import { anyPack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { StatusSchema } from "../../gen/google/rpc/status_pb";
import { ERROR_DOMAIN, errorMetadata } from "../errors";
import { requestIdFor, toAppError, type CallGate, type IncomingCall } from "./call-gate";
import { unimplemented, type AnyClientStream, type AnyServerStream, type AnyUnary } from "./handlers";
import type { RequestContext } from "./request-context";

/** The part of a grpc-js call every kind shares. */
type SurfaceCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "metadata" | "getPeer"> & NodeJS.EventEmitter;

const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/** Encoded bytes of message objects already sent; the objects are never mutated once replied. */
const encodedMessages = new WeakMap<object, Buffer>();

function encodeOnce(schema: DescMessage, message: Message): Buffer {
  let bytes = encodedMessages.get(message);
  if (!bytes) encodedMessages.set(message, (bytes = asBuffer(toBinary(schema, message))));
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

function deserializer(schema: DescMessage) {
  return (bytes: Buffer) => fromBinary(schema, bytes);
}

/** A grpc-js error carrying google.rpc.Status with one ErrorInfo, plus the request id. */
function grpcError(error: unknown, requestId: string, log: Logger): grpc.ServerErrorResponse {
  const appError = toAppError(error);
  if (appError.code === "INTERNAL" || appError.code === "SERVICE_UNAVAILABLE") log.error({ err: error, requestId }, "call failed");
  const status = create(StatusSchema, {
    code: appError.rpcCode,
    message: appError.message,
    details: [
      anyPack(
        ErrorInfoSchema,
        create(ErrorInfoSchema, { reason: appError.code, domain: ERROR_DOMAIN, metadata: errorMetadata(appError, requestId) }),
      ),
    ],
  });
  const metadata = new grpc.Metadata();
  metadata.set("grpc-status-details-bin", asBuffer(toBinary(StatusSchema, status)));
  metadata.set("x-request-id", requestId);
  if (appError.subject.retryAfterSeconds !== undefined) metadata.set("retry-after", String(appError.subject.retryAfterSeconds));
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

function drainedOrCancelled(call: grpc.ServerWritableStream<unknown, unknown>): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("cancelled", done);
      resolve();
    };
    call.once("drain", done);
    call.once("cancelled", done);
  });
}

/** An async iterable over a grpc-js client stream, so client-streaming handlers see one shape. */
async function* readStream<T>(stream: AsyncIterable<unknown>): AsyncIterable<T> {
  for await (const message of stream) yield message as T;
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
    const admit = (call: SurfaceCall & { cancelled: boolean }): [RequestContext | Promise<RequestContext>, string] => {
      const incoming = new GrpcIncomingCall(call, name);
      const requestId = requestIdFor(incoming.requestIdHeader);
      return [gate.admit(incoming, requestId), requestId];
    };
    switch (method.methodKind) {
      case "unary":
        implementation[method.name] = (call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const [ctx, requestId] = admit(call);
          let replied: Promise<unknown>;
          try {
            replied = ctx instanceof Promise ? ctx.then((c) => (handler as AnyUnary)(call.request, c)) : (handler as AnyUnary)(call.request, ctx);
          } catch (error) {
            replied = Promise.reject(error);
          }
          replied.then(
            (reply) => callback(null, reply, requestIdTrailer(requestId)),
            (error) => callback(grpcError(error, requestId, log)),
          );
        };
        break;
      case "server_streaming":
        implementation[method.name] = (call: grpc.ServerWritableStream<unknown, unknown>) => {
          const [ctx, requestId] = admit(call);
          (async () => {
            for await (const reply of (handler as AnyServerStream)(call.request, await ctx)) {
              if (call.cancelled) return;
              // Respect back-pressure so large streams keep memory flat.
              if (!call.write(reply)) await drainedOrCancelled(call);
            }
            call.end(requestIdTrailer(requestId));
          })().catch((error) => call.emit("error", grpcError(error, requestId, log)));
        };
        break;
      case "client_streaming":
        implementation[method.name] = (call: grpc.ServerReadableStream<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => {
          const [ctx, requestId] = admit(call);
          Promise.resolve(ctx)
            .then((c) => (handler as AnyClientStream)(readStream(call), c))
            .then(
              (reply) => callback(null, reply, requestIdTrailer(requestId)),
              (error) => callback(grpcError(error, requestId, log)),
            );
        };
        break;
      default:
        throw new Error(`${name}: bidi streaming is not supported`);
    }
  }
  return { definition: definition as grpc.ServiceDefinition, implementation };
}
