import { AppError } from "../errors";

/** How long a client is told to wait before retrying a call the database could not serve. */
export const DATABASE_RETRY_AFTER_SECONDS = 2;

// Socket-level failures of the connection to the server.
const CONNECTION_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "EAI_AGAIN"]);
// SQLSTATEs of a server that is going away or cannot take the connection: admin_shutdown,
// crash_shutdown, cannot_connect_now (shutting down or starting up), too_many_connections, and
// the whole connection_exception class (08xxx).
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "53300"]);
// node-postgres reports a dropped connection by message only (no code).
const CONNECTION_LOST = /Connection terminated|Client has encountered a connection error|connect ECONNREFUSED|Client was closed and is not queryable|PGlite is closed/i;

interface ErrorLike {
  code?: unknown;
  name?: unknown;
  message?: unknown;
  nativeError?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/** The error and everything it wraps: Objection's nativeError, `cause`, AggregateError members. */
function* chain(error: unknown, depth = 0): Generator<ErrorLike> {
  if (depth > 5 || error === null || typeof error !== "object") return;
  const e = error as ErrorLike;
  yield e;
  yield* chain(e.nativeError, depth + 1);
  yield* chain(e.cause, depth + 1);
  if (Array.isArray(e.errors)) for (const inner of e.errors) yield* chain(inner, depth + 1);
}

/**
 * SERVICE_UNAVAILABLE (with retry-after) when the error says the database could not serve the
 * call at all: unreachable, shutting down or starting up, out of connections, or the pool
 * exhausted. Undefined for every other error (a query or constraint failure is not an outage).
 */
export function databaseUnavailable(error: unknown): AppError | undefined {
  const subject = { retryAfterSeconds: DATABASE_RETRY_AFTER_SECONDS };
  for (const e of chain(error)) {
    // knex waited acquireConnectionTimeout for a free pooled connection: every connection is busy.
    if (e.name === "KnexTimeoutError") {
      return new AppError("SERVICE_UNAVAILABLE", "the database is overloaded (no free connection in time); retry later", subject);
    }
    const code = typeof e.code === "string" ? e.code : undefined;
    if (code === "53300") {
      return new AppError("SERVICE_UNAVAILABLE", "the database has no connection slot free (too many connections); retry later", subject);
    }
    if (code === "57P03") {
      return new AppError("SERVICE_UNAVAILABLE", "the database is starting up or shutting down; retry later", subject);
    }
    if ((code !== undefined && (CONNECTION_ERRNOS.has(code) || UNAVAILABLE_SQLSTATES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) ||
      (typeof e.message === "string" && CONNECTION_LOST.test(e.message))) {
      return new AppError("SERVICE_UNAVAILABLE", "the database is unreachable; retry later", subject);
    }
  }
  return undefined;
}
