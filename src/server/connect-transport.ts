import type { DescService } from "@bufbuild/protobuf";
import { ConnectError, createContextKey, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import type { Logger } from "pino";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { ERROR_DOMAIN, errorMetadata } from "../errors";
import { requestIdFor, toAppError, type CallGate } from "./call-gate";
import { unimplemented, type AnyClientStream, type AnyServerStream, type AnyUnary } from "./handlers";
import type { RequestContext } from "./request-context";

/** The client's socket address, set by the HTTP adapter for each request. */
export const clientAddressKey = createContextKey<string>("unknown");

/** Connect's renderer (Connect JSON/binary, gRPC-Web, and the plain HTTP routes' error JSON). */
export function connectError(error: unknown, requestId: string, log: Logger): ConnectError {
  const appError = toAppError(error);
  if (appError.code === "INTERNAL" || appError.code === "SERVICE_UNAVAILABLE") log.error({ err: error, requestId }, "call failed");
  // x-request-id is already a response header (set on admission); repeating it here would make
  // streaming and gRPC-Web clients, which merge headers and trailers, read it twice.
  const headers = new Headers();
  if (appError.subject.retryAfterSeconds !== undefined) headers.set("retry-after", String(appError.subject.retryAfterSeconds));
  return new ConnectError(appError.message, appError.rpcCode, headers, [
    { desc: ErrorInfoSchema, value: { reason: appError.code, domain: ERROR_DOMAIN, metadata: errorMetadata(appError, requestId) } },
  ]);
}

/**
 * Registers our transport-free handlers on a Connect router (Connect JSON/binary and gRPC-Web),
 * going through the same CallGate as the gRPC transport.
 */
export function registerConnectService(
  router: ConnectRouter,
  service: DescService,
  handlers: Record<string, unknown>,
  gate: CallGate,
  log: Logger,
): void {
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const name = `${service.typeName}/${method.name}`;
    const handler = handlers[method.localName] ?? unimplemented(name);
    const admit = (hctx: HandlerContext): [RequestContext | Promise<RequestContext>, string] => {
      const requestId = requestIdFor(hctx.requestHeader.get("x-request-id") ?? undefined);
      hctx.responseHeader.set("x-request-id", requestId);
      const ctx = gate.admit(
        {
          method: name,
          authorization: hctx.requestHeader.get("authorization") ?? undefined,
          requestIdHeader: requestId,
          clientAddress: hctx.values.get(clientAddressKey),
          signal: hctx.signal,
        },
        requestId,
      );
      return [ctx, requestId];
    };
    switch (method.methodKind) {
      case "unary":
        impl[method.localName] = async (request: unknown, hctx: HandlerContext) => {
          const [ctx, requestId] = admit(hctx);
          try {
            return await (handler as AnyUnary)(request, await ctx);
          } catch (error) {
            throw connectError(error, requestId, log);
          }
        };
        break;
      case "server_streaming":
        impl[method.localName] = async function* (request: unknown, hctx: HandlerContext) {
          const [ctx, requestId] = admit(hctx);
          try {
            yield* (handler as AnyServerStream)(request, await ctx);
          } catch (error) {
            throw connectError(error, requestId, log);
          }
        };
        break;
      case "client_streaming":
        impl[method.localName] = async (requests: AsyncIterable<unknown>, hctx: HandlerContext) => {
          const [ctx, requestId] = admit(hctx);
          try {
            return await (handler as AnyClientStream)(requests, await ctx);
          } catch (error) {
            throw connectError(error, requestId, log);
          }
        };
        break;
      default:
        throw new Error(`${name}: bidi streaming is not supported`);
    }
  }
  router.service(service, impl as never);
}
