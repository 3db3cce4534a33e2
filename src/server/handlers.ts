import { AppError } from "../errors";
import type { RequestContext } from "../rpc/service-handlers";

// Loose runtime views of the handler shapes, for the transports' generic dispatch.
export type AnyUnary = (request: unknown, ctx: RequestContext) => Promise<unknown>;
export type AnyServerStream = (request: unknown, ctx: RequestContext) => AsyncIterable<unknown>;
export type AnyClientStream = (requests: AsyncIterable<unknown>, ctx: RequestContext) => Promise<unknown>;

/** What a transport serves for a method that has no handler in this build. */
export function unimplemented(method: string) {
  return () => {
    throw new AppError("UNIMPLEMENTED", `${method} is not implemented by this server`);
  };
}
