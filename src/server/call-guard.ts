import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import { Code } from "@connectrpc/connect";
import type { Knex } from "knex";
import type { Logger } from "pino";
import { recordAudit, recordUnauthenticated } from "../audit/audit-log";
import { AppError, NOT_COUNTED_ERRORS } from "../errors";
import type { ServiceMetrics } from "../metrics/service-metrics";
import type { RateLimitedOperation, RateLimiter, Reservation } from "../rate-limit/rate-limiter";
import type { ItemError } from "../rpc/batch-handlers";
import { CALL_POLICY, type CallName, type CallPolicy } from "../rpc/call-policy";
import type { IncomingCall } from "./call-gate";
import { toAppError } from "../rpc/error-reply";
import { checkedStream, checkRequestText } from "./text-check";
import type { AnyClientStream, AnyServerStream, AnyUnary } from "./handlers";
import type { RequestContext, ServiceHandlers } from "../rpc/service-handlers";

const NOT_COUNTED = new Set<string>(NOT_COUNTED_ERRORS);

/** The policy of a call; a name outside the table (no such RPC in this build) has none. */
const policyOf = (method: string): CallPolicy => (CALL_POLICY as Record<string, CallPolicy>)[method] ?? {};

const codeName = (code: Code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();

/**
 * The metric label of a failed call: a gRPC code name, except for calls the client's own
 * deadline ended (CLIENT_DEADLINE) and calls a shutdown refused or ended (SHUTDOWN), which are
 * no server fault and stay out of the server-error ratio.
 */
export function codeLabel(error: AppError): string {
  if (error.code === "DEADLINE_EXCEEDED") return "CLIENT_DEADLINE";
  if (error.code === "SHUTTING_DOWN") return "SHUTDOWN";
  return codeName(error.rpcCode);
}

export interface CallGuardOptions {
  knex: Knex;
  metrics: ServiceMetrics;
  rateLimiter: RateLimiter;
  rateLimits: { enabled: boolean; exemptRoles: readonly string[] };
  log: Logger;
  /**
   * Erased users (DeleteUserData): a service or admin call naming one is refused before it writes
   * anything; a refusal of a user's call that names one is audited with the erasure hash.
   */
  erased?: { readonly size: number; has(userId: string): boolean; stored(userId: string): string };
}

/**
 * What happens around every call once the transport has admitted it, whichever transport it
 * came by: RPC metrics by method and code, rate limits (a slot is reserved before the handler
 * runs and given back when the call fails validation), and an audit event for every refused
 * access. Unauthenticated refusals never reach a handler: the CallGate reports them here.
 */
export class CallGuard {
  constructor(private readonly options: CallGuardOptions) {}

  /** The handlers of a service, each wrapped. */
  wrap<S extends GenService<GenServiceMethods>>(service: S, handlers: ServiceHandlers<S>): ServiceHandlers<S> {
    const byName = handlers as Record<string, unknown>;
    const wrapped: Record<string, unknown> = {};
    for (const method of service.methods) {
      const name = method.localName;
      const handler = byName[name];
      switch (method.methodKind) {
        case "unary":
          wrapped[name] = (request: unknown, ctx: RequestContext) =>
            this.around(name, request, ctx, () => {
              checkRequestText(request);
              return (handler as AnyUnary)(request, ctx);
            });
          break;
        case "client_streaming":
          wrapped[name] = (requests: AsyncIterable<unknown>, ctx: RequestContext) =>
            this.around(name, undefined, ctx, () => (handler as AnyClientStream)(checkedStream(requests), ctx));
          break;
        case "server_streaming":
          wrapped[name] = (request: unknown, ctx: RequestContext) => this.stream(name, request, ctx, handler as AnyServerStream);
          break;
        default:
          wrapped[name] = handler;
      }
    }
    return wrapped as ServiceHandlers<S>;
  }

  /** An unauthenticated call: counted in the metrics and audited (aggregated per address and minute). */
  async refused(call: IncomingCall, requestId: string, error: unknown, startedAtMs: number): Promise<void> {
    const appError = toAppError(error);
    this.options.metrics.observeRpc(localName(call.method), codeLabel(appError), elapsed(startedAtMs));
    if (appError.code !== "UNAUTHENTICATED" && appError.code !== "USER_ERASED") return;
    // Awaited (the refusal is answered after it is recorded); a database outage only logs.
    await recordUnauthenticated(this.options.knex, {
      clientAddress: call.clientAddress,
      requestId,
      method: call.method,
      reason: appError.message,
    }).catch((err) => this.options.log.warn({ err, requestId }, "could not audit an unauthenticated call"));
  }

  /**
   * The same treatment for a call that is not an RPC handler (the plain HTTP file routes):
   * metrics, rate limit, audit of the read and of a refusal. `method` is the RPC-style local name,
   * e.g. "readModelFile", "exportVoiceModel", "downloadBackup".
   */
  guardCall<T>(method: CallName, request: unknown, ctx: RequestContext, run: () => Promise<T>): Promise<T> {
    return this.around(method, request, ctx, run);
  }

  private async around<T>(method: string, request: unknown, ctx: RequestContext, run: () => Promise<T>): Promise<T> {
    const startedAtMs = performance.now();
    let reservation: Reservation | undefined;
    // Most calls are neither rate limited nor audited: they skip both awaits.
    const { rateLimit: operation, audit: auditAction, items } = policyOf(method);
    try {
      this.refuseErased(method, request, ctx);
      if (operation) reservation = await this.reserve(operation, requestedUser(request), ctx, items ? items.slots(request) : 1);
      const reply = await run();
      // The transport may already have answered DEADLINE_EXCEEDED or UNAVAILABLE for it.
      this.options.metrics.observeRpc(method, ctx.endedBy ? codeLabel(ctx.endedBy) : "OK", elapsed(startedAtMs));
      if (items) await this.itemsRefused(items.errors(reply), ctx, reservation, request);
      if (auditAction) await this.audited(auditAction, request, ctx);
      return reply;
    } catch (error) {
      await this.failed(method, ctx, error, startedAtMs, reservation, request);
      throw error;
    }
  }

  private async *stream(method: string, request: unknown, ctx: RequestContext, handler: AnyServerStream): AsyncIterable<unknown> {
    const startedAtMs = performance.now();
    let reservation: Reservation | undefined;
    const { rateLimit: operation, audit: auditAction } = policyOf(method);
    let ended = false;
    try {
      this.refuseErased(method, request, ctx);
      if (operation) reservation = await this.reserve(operation, requestedUser(request), ctx, 1);
      checkRequestText(request);
      yield* handler(request, ctx);
      ended = true;
      this.options.metrics.observeRpc(method, "OK", elapsed(startedAtMs));
      if (auditAction) await this.audited(auditAction, request, ctx);
    } catch (error) {
      ended = true;
      await this.failed(method, ctx, error, startedAtMs, reservation, request);
      throw error;
    } finally {
      // The transport closed the stream before its end: the client went away.
      if (!ended) this.options.metrics.observeRpc(method, ctx.endedBy ? codeLabel(ctx.endedBy) : "CANCELLED", elapsed(startedAtMs));
    }
  }

  /**
   * A service or admin call for an erased user would write their id again (a rate-limit row,
   * usage, a share, an audit row): refused, the message naming the field, not the id. A user's
   * own calls name only themselves (the gate refuses an erased user's token) or are refused as
   * ACCESS_DENIED. DeleteUserData may name them again to report the finished purge.
   */
  private refuseErased(method: string, request: unknown, ctx: RequestContext): void {
    const erased = this.options.erased;
    if (!erased || erased.size === 0 || !ctx.caller.privileged || method === "deleteUserData") return;
    for (const [field, userId] of requestUsers(request)) {
      if (erased.has(userId)) throw new AppError("INVALID_ARGUMENT", `${field} names a user whose data was deleted (DeleteUserData)`, { field });
    }
  }

  /** The audit event of a call whose policy names one, after it succeeded. */
  private async audited(action: string, request: unknown, ctx: RequestContext): Promise<void> {
    type Subject = { userId?: unknown; modelId?: unknown };
    const r = (request ?? {}) as Subject & { events?: Subject[] };
    // A batch names its users and models per record: the event names them when there is one.
    const subjects: Subject[] = Array.isArray(r.events) ? r.events : [r];
    const one = (key: keyof Subject) => {
      const values = [...new Set(subjects.map((x) => x[key]).filter((v): v is string => typeof v === "string" && v !== ""))];
      return values.length === 1 ? values[0] : undefined;
    };
    const modelId = one("modelId");
    await recordAudit(this.options.knex, {
      actorId: ctx.caller.userId,
      actorRoles: ctx.caller.roles,
      requestId: ctx.requestId,
      clientAddress: ctx.clientAddress,
      action,
      targetUserId: one("userId") ?? (Array.isArray(r.events) ? undefined : ctx.caller.userId),
      modelId: modelId && /^[0-9a-f-]{36}$/i.test(modelId) ? modelId : undefined,
      details: { method: ctx.method, ...(Array.isArray(r.events) ? { records: r.events.length } : {}) },
    }).catch((err) => ctx.log.warn({ err }, "could not audit a call"));
  }

  /**
   * Takes `slots` slots of the operation's rate limit (a batch takes one per item, all or none);
   * throws RATE_LIMITED (changing nothing) when fewer are left.
   */
  private async reserve(operation: RateLimitedOperation, targetUser: string | undefined, ctx: RequestContext, slots: number): Promise<Reservation | undefined> {
    const { enabled, exemptRoles } = this.options.rateLimits;
    if (!enabled || ctx.caller.roles.some((r) => exemptRoles.includes(r))) return undefined;
    // A user acts only for themselves (naming anyone else is refused later as ACCESS_DENIED).
    const userId = ctx.caller.privileged && targetUser ? targetUser : ctx.caller.userId;
    const reservation = await this.options.rateLimiter.reserve(userId, operation, slots);
    if (!reservation.granted) {
      this.options.metrics.rateLimitRefusals.inc({ operation });
      const { limit, retryAfterSeconds, remaining } = reservation;
      const batch = slots > 1 ? ` (a batch of ${slots} items needs ${slots} slots, ${remaining} left)` : "";
      throw new AppError(
        "RATE_LIMITED",
        `rate limit for ${operation} exceeded for user ${userId}: ${limit.limit} per ${limit.windowSeconds} s${batch}; retry in ${retryAfterSeconds} s`,
        { userId, retryAfterSeconds },
      );
    }
    return reservation;
  }

  /**
   * The items of a batch reply that failed, as their single calls would have: one refused by
   * validation or access gives its slot back, an access refusal is audited.
   */
  private async itemsRefused(errors: ReadonlyArray<ItemError | undefined>, ctx: RequestContext, reservation: Reservation | undefined, request: unknown) {
    const uncounted = errors.filter((e) => e !== undefined && NOT_COUNTED.has(e.info.reason)).length;
    if (reservation?.granted && uncounted > 0) {
      await reservation.release(uncounted).catch((err) => ctx.log.warn({ err }, "could not release rate-limit slots"));
    }
    for (const [index, e] of errors.entries()) {
      if (e?.info.reason !== "ACCESS_DENIED") continue;
      const { modelId, userId } = e.info.metadata;
      await this.auditRefusal(ctx, new AppError("ACCESS_DENIED", e.message, { modelId, userId, itemIndex: index }), request);
    }
  }

  private async failed(method: string, ctx: RequestContext, error: unknown, startedAtMs: number, reservation: Reservation | undefined, request: unknown) {
    const appError = toAppError(error);
    this.options.metrics.observeRpc(method, codeLabel(ctx.endedBy ?? appError), elapsed(startedAtMs));
    if (reservation?.granted) {
      // A batch that failed at item i (all_or_nothing) keeps the slots of the items before it, and
      // that item's unless it was refused by validation or access; the items after never ran.
      const index = appError.subject.itemIndex;
      const refused = NOT_COUNTED.has(appError.code);
      const kept = index === undefined ? (refused ? 0 : reservation.slots) : index + (refused ? 0 : 1);
      if (kept < reservation.slots) {
        await reservation.release(reservation.slots - kept).catch((err) => ctx.log.warn({ err }, "could not release a rate-limit slot"));
      }
    }
    if (appError.code === "ACCESS_DENIED" || appError.code === "RATE_LIMITED") await this.auditRefusal(ctx, appError, request);
  }

  /** The refusal's message names users as "{user:N}" (see recordAudit), so erasure can rewrite them. */
  private async auditRefusal(ctx: RequestContext, error: AppError, request: unknown): Promise<void> {
    await recordAudit(this.options.knex, {
      actorId: ctx.caller.userId,
      actorRoles: ctx.caller.roles,
      requestId: ctx.requestId,
      clientAddress: ctx.clientAddress,
      action: error.code === "ACCESS_DENIED" ? "access.denied" : "rate.limited",
      targetUserId: error.subject.userId,
      modelId: error.subject.modelId,
      resultCode: error.code,
      userIds: requestUsers(request).map(([, userId]) => userId),
      storedId: this.options.erased && this.options.erased.size > 0 ? this.options.erased.stored : undefined,
      // A batch item's refusal names its position.
      details: { method: ctx.method, message: error.message, ...(error.subject.itemIndex === undefined ? {} : { itemIndex: error.subject.itemIndex }) },
    }).catch((err) => ctx.log.warn({ err }, "could not audit a refused call"));
  }
}

/** The userId (or ownerId) a request names, if any: rate limits count per target user. */
function requestedUser(request: unknown): string | undefined {
  const r = request as { userId?: unknown; ownerId?: unknown } | undefined;
  if (typeof r?.userId === "string" && r.userId) return r.userId;
  if (typeof r?.ownerId === "string" && r.ownerId) return r.ownerId;
  return undefined;
}

const USER_FIELDS = new Set(["userId", "ownerId", "targetUserIds"]);

/** Every user id a request names (its own fields and those of its batch items), with the field. */
function requestUsers(request: unknown, depth = 0): Array<[field: string, userId: string]> {
  if (request === null || typeof request !== "object" || ArrayBuffer.isView(request) || depth > 2) return [];
  const found: Array<[string, string]> = [];
  for (const [key, value] of Object.entries(request)) {
    if (USER_FIELDS.has(key)) {
      for (const v of Array.isArray(value) ? value : [value]) if (typeof v === "string" && v) found.push([key, v]);
    } else if (Array.isArray(value)) {
      for (const item of value) found.push(...requestUsers(item, depth + 1));
    } else if (typeof value === "object") {
      found.push(...requestUsers(value, depth + 1));
    }
  }
  return found;
}

/** "voicemodel.v1.VoiceModelService/GetVoiceModel" -> "getVoiceModel"; other names stay as they are. */
const localName = (method: string) => {
  const slash = method.lastIndexOf("/");
  if (slash < 0) return method;
  const name = method.slice(slash + 1);
  return name.charAt(0).toLowerCase() + name.slice(1);
};

/** Seconds since a performance.now() reading (a number: no BigInt per call). */
const elapsed = (startedAtMs: number) => (performance.now() - startedAtMs) / 1000;
