import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { AppError } from "../errors";
import type { RequestContext } from "./request-context";

/** The transport-free shape of one RPC implementation, by method kind. */
type HandlerFor<M> = M extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? (request: MessageShape<I>, ctx: RequestContext) => Promise<MessageInitShape<O>>
  : M extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? (request: MessageShape<I>, ctx: RequestContext) => AsyncIterable<MessageInitShape<O>>
    : M extends { methodKind: "client_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? (requests: AsyncIterable<MessageShape<I>>, ctx: RequestContext) => Promise<MessageInitShape<O>>
      : never;

/** Every RPC of a service, implemented once; both transports serve this object. */
export type ServiceHandlers<S> = S extends GenService<infer M extends GenServiceMethods>
  ? { [K in keyof M]: HandlerFor<M[K]> }
  : never;

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
