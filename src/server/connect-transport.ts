import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createContextKey, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import type { Logger } from "pino";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { deadlineExceeded } from "../db/call-deadline";
import type { CallEnd, CallRegistry } from "./call-end";
import { requestIdFor, type CallGate } from "./call-gate";
import { errorReply } from "../rpc/error-reply";
import { unimplemented, type AnyClientStream, type AnyServerStream, type AnyUnary } from "./handlers";
import type { RequestContext } from "../rpc/service-handlers";

/** The client's socket address, set by the HTTP adapter for each request. */
export const clientAddressKey = createContextKey<string>("unknown");

/** Connect's renderer (Connect JSON/binary, gRPC-Web, and the plain HTTP routes' error JSON). */
export function connectError(error: unknown, requestId: string, log: Logger): ConnectError {
  const reply = errorReply(error, requestId, log);
  // x-request-id is already a response header (set on admission); repeating it here would make
  // streaming and gRPC-Web clients, which merge headers and trailers, read it twice.
  const headers = new Headers();
  if (reply.retryAfter) headers.set("retry-after", reply.retryAfter);
  return new ConnectError(reply.error.message, reply.error.rpcCode, headers, [{ desc: ErrorInfoSchema, value: reply.info }]);
}

/** The error a call ends with; a client that left gets connect's own (nothing is logged for it). */
function endError(error: unknown, hctx: HandlerContext, end: CallEnd, requestId: string, log: Logger): ConnectError {
  if (hctx.signal.aborted && !end.reason) return ConnectError.from(hctx.signal.reason, Code.Canceled);
  return connectError(error, requestId, log);
}

/**
 * A unary call the HTTP adapter serves without connect's handler (Connect JSON over POST, see
 * connect-adapter.ts): what it read of the request.
 */
export interface DirectCall {
  authorization: string | undefined;
  requestId: string;
  clientAddress: string;
  /** connect-timeout-ms, parsed. */
  timeoutMs: number | undefined;
  /** The adapter's: aborted when the client leaves before the reply is written. */
  signal: AbortSignal;
}

/** Runs one unary call through the gate and handler; rejects with the rendered ConnectError. */
export type DirectUnary = (request: unknown, call: DirectCall) => Promise<unknown>;

function directUnary(name: string, handler: AnyUnary, gate: CallGate, log: Logger, registry: CallRegistry): DirectUnary {
  return async (request, call) => {
    const end = registry.begin(call.timeoutMs === undefined ? undefined : Date.now() + call.timeoutMs);
    const gone = () => end.abandon();
    call.signal.addEventListener("abort", gone, { once: true });
    try {
      const { authorization, requestId, clientAddress, signal } = call;
      const ctx = gate.admit({ method: name, authorization, requestIdHeader: requestId, clientAddress, signal, end }, requestId);
      return await end.race(ctx instanceof Promise ? ctx.then((c) => handler(request, c)) : handler(request, ctx));
    } catch (error) {
      throw connectError(end.reason ?? error, call.requestId, log);
    } finally {
      call.signal.removeEventListener("abort", gone);
      end.done();
    }
  };
}

/**
 * Registers our transport-free handlers on a Connect router (Connect JSON/binary and gRPC-Web),
 * going through the same CallGate as the gRPC transport. Returns the same unary calls by request
 * path, for the adapter's direct path.
 */
export function registerConnectService(
  router: ConnectRouter,
  service: DescService,
  handlers: Record<string, unknown>,
  gate: CallGate,
  log: Logger,
  registry: CallRegistry,
): Map<string, DirectUnary> {
  const direct = new Map<string, DirectUnary>();
  const impl: Record<string, unknown> = {};
  for (const method of service.methods) {
    const name = `${service.typeName}/${method.name}`;
    const handler = handlers[method.localName] ?? unimplemented(name);
    /** The call's context, its request id, and `finish`, which ends the call (once). */
    const admit = (hctx: HandlerContext): [RequestContext | Promise<RequestContext>, string, () => void, CallEnd] => {
      const timeoutMs = hctx.timeoutMs();
      const end = registry.begin(timeoutMs === undefined ? undefined : Date.now() + timeoutMs);
      // Connect aborts the signal when the client leaves and when connect-timeout-ms passes.
      const onAbort = () =>
        ConnectError.from(hctx.signal.reason).code === Code.DeadlineExceeded ? end.end(deadlineExceeded()) : end.abandon();
      if (hctx.signal.aborted) onAbort();
      else hctx.signal.addEventListener("abort", onAbort, { once: true });
      // Connect also aborts the signal after every call it has answered: the listener goes first,
      // or each call would pay for a ConnectError (and its stack trace) it never needed.
      const finish = () => {
        hctx.signal.removeEventListener("abort", onAbort);
        end.done();
      };
      const requestId = requestIdFor(hctx.requestHeader.get("x-request-id") ?? undefined);
      hctx.responseHeader.set("x-request-id", requestId);
      const ctx = gate.admit(
        {
          method: name,
          authorization: hctx.requestHeader.get("authorization") ?? undefined,
          requestIdHeader: requestId,
          clientAddress: hctx.values.get(clientAddressKey),
          signal: hctx.signal,
          end,
        },
        requestId,
      );
      return [ctx, requestId, finish, end];
    };
    switch (method.methodKind) {
      case "unary":
        direct.set(`/${name}`, directUnary(name, handler as AnyUnary, gate, log, registry));
        impl[method.localName] = async (request: unknown, hctx: HandlerContext) => {
          const [ctx, requestId, finish, end] = admit(hctx);
          try {
            return await end.race(Promise.resolve(ctx).then((c) => (handler as AnyUnary)(request, c)));
          } catch (error) {
            throw endError(error, hctx, end, requestId, log);
          } finally {
            finish();
          }
        };
        break;
      case "server_streaming":
        impl[method.localName] = async function* (request: unknown, hctx: HandlerContext) {
          const [ctx, requestId, finish, end] = admit(hctx);
          let replies: AsyncIterator<unknown> | undefined;
          try {
            const c = await end.race(Promise.resolve(ctx));
            const it = (replies = (handler as AnyServerStream)(request, c)[Symbol.asyncIterator]());
            for (;;) {
              // Each step gives up when the call is ended.
              const next = await end.race(it.next());
              if (next.done) return;
              yield next.value;
            }
          } catch (error) {
            throw endError(error, hctx, end, requestId, log);
          } finally {
            replies?.return?.(undefined)?.catch(() => undefined);
            finish();
          }
        };
        break;
      case "client_streaming":
        impl[method.localName] = async (requests: AsyncIterable<unknown>, hctx: HandlerContext) => {
          const [ctx, requestId, finish, end] = admit(hctx);
          try {
            return await end.race(Promise.resolve(ctx).then((c) => (handler as AnyClientStream)(requests, c)));
          } catch (error) {
            throw endError(error, hctx, end, requestId, log);
          } finally {
            finish();
          }
        };
        break;
      default:
        throw new Error(`${name}: bidi streaming is not supported`);
    }
  }
  router.service(service, impl as never);
  return direct;
}
