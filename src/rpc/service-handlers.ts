import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import type { Logger } from "pino";
import type { Caller } from "../auth/caller";
import type { AppError } from "../errors";

/** What a handler knows about the call it serves, whichever transport carried it. */
export interface RequestContext {
  readonly requestId: string;
  /** The verified caller. */
  readonly caller: Caller;
  readonly clientAddress: string;
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Fully qualified method name, e.g. voicemodel.v1.VoiceModelService/GetVoiceModel. */
  readonly method: string;
  readonly log: Logger;
  /** Set once the call was ended before its handler finished: its deadline passed, or the shutdown ended it. */
  readonly endedBy?: AppError;
  /** The call's deadline (epoch ms), if it has one: its writing transactions commit only before it. */
  readonly deadlineMs?: number;
}

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
