import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { TokenVerifier } from "../auth/token-verifier";
import { AppError } from "../errors";
import type { RequestContext } from "./request-context";

/** Told about calls the gate refuses before any handler runs (metrics, audit). */
export interface RefusalObserver {
  refused(call: IncomingCall, requestId: string, error: unknown, startedAt: bigint): Promise<void>;
}

/** What a transport hands over about an incoming call before any handler runs. */
export interface IncomingCall {
  method: string;
  authorization: string | undefined;
  requestIdHeader: string | undefined;
  clientAddress: string;
  signal: AbortSignal;
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
  ) {}

  async admit(call: IncomingCall, requestId: string): Promise<RequestContext> {
    const startedAt = process.hrtime.bigint();
    let caller;
    try {
      caller = await this.authenticate(call.authorization);
    } catch (error) {
      await this.observer?.refused(call, requestId, error, startedAt);
      throw error;
    }
    const base = this.log;
    let log: Logger | undefined;
    return {
      requestId,
      caller,
      clientAddress: call.clientAddress,
      // A getter: the transport may make the signal only when a handler asks for it.
      get signal() {
        return call.signal;
      },
      method: call.method,
      // Every log line of the call carries its request id; the child logger is made on first use
      // (most calls never log).
      get log() {
        return (log ??= base.child({ requestId }));
      },
    };
  }

  private async authenticate(header: string | undefined) {
    if (!header) throw new AppError("UNAUTHENTICATED", "missing authorization: Bearer <token>");
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw new AppError("UNAUTHENTICATED", "authorization must be: Bearer <token>");
    return this.verifier.verify(match[1]);
  }
}

const UNAVAILABLE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EPIPE", "57P01", "57P02", "57P03"]);

/** Every failure as one of our error codes: database outages become SERVICE_UNAVAILABLE. */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const e = error as { code?: string; name?: string; message?: string };
  // Raised by the database for writes about a user whose data was deleted (DeleteUserData).
  if (e?.code === "VM001") return new AppError("ACCESS_DENIED", "this user's data was deleted; nothing can be stored for them");
  const unavailable =
    (e?.code !== undefined && (UNAVAILABLE_CODES.has(e.code) || e.code.startsWith("08"))) ||
    e?.name === "KnexTimeoutError" ||
    /Connection terminated|connect ECONNREFUSED|Client has encountered a connection error/i.test(e?.message ?? "");
  if (unavailable) return new AppError("SERVICE_UNAVAILABLE", "the database is unreachable; retry later");
  return new AppError("INTERNAL", "internal error");
}
