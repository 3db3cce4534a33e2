import { create, fromBinary, toBinary, type DescMessage, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { ErrorInfoSchema, type ErrorInfo } from "../../gen/google/rpc/error_details_pb";
import { StatusSchema, type Status } from "../../gen/google/rpc/status_pb";

/** A unary reply with the response headers and trailers. */
export interface GrpcReply<T> {
  message: T;
  headers: grpc.Metadata;
  trailers: grpc.Metadata;
  /** x-request-id from the headers (or the trailers). */
  requestId: string | undefined;
}

/** A failed call: the status, and the google.rpc.Status / ErrorInfo from grpc-status-details-bin. */
export class GrpcCallError extends Error {
  override readonly name = "GrpcCallError";
  constructor(
    readonly code: grpc.status,
    readonly details: string,
    readonly headers: grpc.Metadata | undefined,
    readonly trailers: grpc.Metadata,
    readonly status: Status | undefined,
    readonly errorInfo: ErrorInfo | undefined,
  ) {
    super(`gRPC ${grpc.status[code]}: ${details}`);
  }

  get requestId(): string | undefined {
    return firstString(this.headers, "x-request-id") ?? firstString(this.trailers, "x-request-id");
  }
}

export interface GrpcCallOptions {
  /** Sent as `authorization: Bearer <token>` when given. */
  token?: string;
  /** Sent as x-request-id. */
  requestId?: string;
  /** Extra request metadata. */
  metadata?: Record<string, string>;
  /** Milliseconds from now. */
  deadlineMs?: number;
}

type Methods<S> = S extends GenService<infer M extends GenServiceMethods> ? M : never;

/** A promisified unary client: one function per RPC, named like the generated localName. */
export type GrpcClient<S> = {
  [K in keyof Methods<S> as Methods<S>[K]["methodKind"] extends "unary" ? K : never]: (
    request: MessageInitShape<Methods<S>[K]["input"]>,
    options?: GrpcCallOptions,
  ) => Promise<GrpcReply<MessageShape<Methods<S>[K]["output"]>>>;
};

function firstString(metadata: grpc.Metadata | undefined, key: string): string | undefined {
  const value = metadata?.get(key)[0];
  return typeof value === "string" ? value : undefined;
}

function decodeStatus(trailers: grpc.Metadata): { status?: Status; errorInfo?: ErrorInfo } {
  const raw = trailers.get("grpc-status-details-bin")[0];
  if (!(raw instanceof Buffer)) return {};
  const status = fromBinary(StatusSchema, raw);
  for (const any of status.details) {
    const errorInfo = anyUnpack(any, ErrorInfoSchema);
    if (errorInfo) return { status, errorInfo };
  }
  return { status };
}

function serviceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  const serialize = (schema: DescMessage) => (value: unknown) => Buffer.from(toBinary(schema, create(schema, value as never)));
  const deserialize = (schema: DescMessage) => (bytes: Buffer) => fromBinary(schema, bytes);
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serialize(method.input),
      requestDeserialize: deserialize(method.input),
      responseSerialize: serialize(method.output),
      responseDeserialize: deserialize(method.output),
    };
  }
  return definition as grpc.ServiceDefinition;
}

export interface GrpcConnection<S> {
  /** A client whose calls carry this token (unless a call passes its own). */
  as(token: string | undefined): GrpcClient<S>;
  /**
   * Calls any method by localName, whatever its kind: `input` is one request, or for client
   * streaming the requests to send. Resolves with every reply message.
   */
  invoke(localName: string, input: unknown, options?: GrpcCallOptions): Promise<GrpcReply<unknown[]>>;
  close(): void;
}

/**
 * A @grpc/grpc-js client for a protobuf-es service descriptor, built with
 * makeGenericClientConstructor and protobuf-es serializers (no proto files at run time).
 */
export function connectGrpc<S extends DescService>(service: S, address: string): GrpcConnection<S> {
  const Ctor = grpc.makeGenericClientConstructor(serviceDefinition(service), service.typeName);
  const raw = new Ctor(address, grpc.credentials.createInsecure()) as unknown as Record<string, Function> & grpc.Client;

  function unary(localName: string, request: unknown, options: GrpcCallOptions): Promise<GrpcReply<unknown>> {
    return invoke(localName, request, options).then((reply) => ({ ...reply, message: reply.message[0] }));
  }

  function invoke(localName: string, input: unknown, options: GrpcCallOptions): Promise<GrpcReply<unknown[]>> {
    const method = service.methods.find((m) => m.localName === localName);
    if (!method) throw new Error(`${service.typeName} has no method ${localName}`);
    const metadata = new grpc.Metadata();
    if (options.token !== undefined) metadata.set("authorization", `Bearer ${options.token}`);
    if (options.requestId !== undefined) metadata.set("x-request-id", options.requestId);
    for (const [key, value] of Object.entries(options.metadata ?? {})) metadata.set(key, value);
    const callOptions: grpc.CallOptions = options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
    return new Promise((resolve, reject) => {
      let headers: grpc.Metadata | undefined;
      let outcome: { error: grpc.ServiceError | null; message: unknown[] } | undefined;
      let trailers: grpc.Metadata | undefined;
      const settle = () => {
        if (!outcome || !trailers) return;
        if (outcome.error) {
          const e = outcome.error;
          const errTrailers = e.metadata ?? trailers;
          const { status, errorInfo } = decodeStatus(errTrailers);
          reject(new GrpcCallError(e.code, e.details, headers, errTrailers, status, errorInfo));
        } else {
          resolve({
            message: outcome.message,
            headers: headers ?? new grpc.Metadata(),
            trailers,
            requestId: firstString(headers, "x-request-id") ?? firstString(trailers, "x-request-id"),
          });
        }
      };
      const messages: unknown[] = [];
      const done = (error: grpc.ServiceError | null, message?: unknown) => {
        if (outcome) return;
        if (!error && message !== undefined) messages.push(message);
        outcome = { error, message: messages };
        settle();
      };
      let call: grpc.ClientUnaryCall | grpc.ClientReadableStream<unknown> | grpc.ClientWritableStream<unknown>;
      switch (method.methodKind) {
        case "unary":
          call = raw[localName](input, metadata, callOptions, done);
          break;
        case "server_streaming": {
          const stream = raw[localName](input, metadata, callOptions) as grpc.ClientReadableStream<unknown>;
          stream.on("data", (m: unknown) => messages.push(m));
          stream.on("error", (e: grpc.ServiceError) => done(e));
          stream.on("end", () => done(null));
          call = stream;
          break;
        }
        case "client_streaming": {
          const stream = raw[localName](metadata, callOptions, done) as grpc.ClientWritableStream<unknown>;
          for (const request of input as Iterable<unknown>) stream.write(request);
          stream.end();
          call = stream;
          break;
        }
        default:
          throw new Error(`${localName}: bidi streaming is not supported by this test client`);
      }
      call.on("metadata", (m: grpc.Metadata) => (headers = m));
      call.on("status", (s: grpc.StatusObject) => {
        trailers = s.metadata;
        settle();
      });
    });
  }

  return {
    as(token) {
      const client: Record<string, unknown> = {};
      for (const method of service.methods) {
        if (method.methodKind !== "unary") continue;
        client[method.localName] = (request: unknown, options: GrpcCallOptions = {}) =>
          unary(method.localName, request, { token, ...options });
      }
      return client as GrpcClient<S>;
    },
    invoke: (localName, input, options = {}) => invoke(localName, input, options),
    close: () => raw.close(),
  };
}
