import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Caller } from "../auth/caller";
import type { TokenVerifier } from "../auth/token-verifier";
import { AppError } from "../errors";
import type { CallEnd, CallRegistry } from "./call-end";
import { shuttingDown } from "./call-end";
import type { RequestContext } from "../rpc/service-handlers";

/** Told about calls the gate refuses before any handler runs (metrics, audit). */
export interface RefusalObserver {
  refused(call: IncomingCall, requestId: string, error: unknown, startedAtMs: number): Promise<void>;
}

/** What a transport hands over about an incoming call before any handler runs. */
export interface IncomingCall {
  method: string;
  authorization: string | undefined;
  requestIdHeader: string | undefined;
  clientAddress: string;
  signal: AbortSignal;
  /** How the call may be ended early (deadline, shutdown), when the transport tracks it. */
  end?: CallEnd;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** A client's x-request-id is kept when it is sane; otherwise the service makes one. */
export const requestIdFor = (header: string | undefined) =>
  header !== undefined && REQUEST_ID.test(header) ? header : randomUUID();

/**
 * The steps every call takes, whichever transport carried it: authenticate the bearer token,
 * then build the handler's context. Refusals go to the observer (metrics, audit); rate limits,
 * RPC metrics and refused-access audit of admitted calls are the CallGuard's (call-guard.ts),
 * which wraps the handlers.
 */
export class CallGate {
  constructor(
    private readonly verifier: TokenVerifier,
    private readonly log: Logger,
    private readonly observer?: RefusalObserver,
    private readonly registry?: CallRegistry,
    /** Whether a verified caller's user was erased (DeleteUserData): their tokens are refused. */
    private readonly isErased?: (userId: string) => boolean | Promise<boolean>,
  ) {}

  /**
   * The handler's context, or UNAUTHENTICATED. Synchronous when the token was verified before
   * (the common case): a cheap RPC should not pay promise hops for a Map lookup.
   */
  admit(call: IncomingCall, requestId: string): RequestContext | Promise<RequestContext> {
    const startedAtMs = performance.now();
    let caller: Caller | Promise<Caller>;
    try {
      if (this.registry?.refusing) throw shuttingDown();
      caller = this.authenticate(call.authorization);
    } catch (error) {
      return this.refuse(call, requestId, error, startedAtMs);
    }
    if (!(caller instanceof Promise)) return this.admitVerified(call, requestId, caller, startedAtMs);
    return caller.then(
      (verified) => this.admitVerified(call, requestId, verified, startedAtMs),
      (error) => this.refuse(call, requestId, error, startedAtMs),
    );
  }

  /** A verified caller: refused if their user was erased (a check that may first read the erased users). */
  private admitVerified(call: IncomingCall, requestId: string, caller: Caller, startedAtMs: number): RequestContext | Promise<RequestContext> {
    const erased = this.isErased?.(caller.userId) ?? false;
    const decide = (isErased: boolean) => (isErased ? this.refuse(call, requestId, userErased(), startedAtMs) : new CallContext(call, requestId, caller, this.log));
    if (!(erased instanceof Promise)) return decide(erased);
    return erased.then(decide, (error) => this.refuse(call, requestId, error, startedAtMs));
  }

  private async refuse(call: IncomingCall, requestId: string, error: unknown, startedAtMs: number): Promise<never> {
    await this.observer?.refused(call, requestId, error, startedAtMs);
    throw error;
  }

  private authenticate(header: string | undefined): Caller | Promise<Caller> {
    if (!header) throw new AppError("UNAUTHENTICATED", "missing authorization: Bearer <token>");
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw new AppError("UNAUTHENTICATED", "authorization must be: Bearer <token>");
    return this.verifier.verify(match[1]);
  }
}

/** The message names no user: the refusal is audited (per address and minute) and may be logged. */
const userErased = () => new AppError("USER_ERASED", "the user of this token was erased (DeleteUserData); their tokens are no longer accepted");

/** A class rather than an object literal with getters: one is made per call. */
class CallContext implements RequestContext {
  private childLog: Logger | undefined;

  constructor(
    private readonly call: IncomingCall,
    readonly requestId: string,
    readonly caller: Caller,
    private readonly baseLog: Logger,
  ) {}

  get method() {
    return this.call.method;
  }

  // Getters: the transport may work these out only when something asks.
  get clientAddress() {
    return this.call.clientAddress;
  }

  get signal() {
    return this.call.signal;
  }

  get endedBy() {
    return this.call.end?.reason;
  }

  get deadlineMs() {
    return this.call.end?.deadlineMs;
  }

  /** Every log line of the call carries its request id; made on first use (most calls never log). */
  get log() {
    return (this.childLog ??= this.baseLog.child({ requestId: this.requestId }));
  }
}
