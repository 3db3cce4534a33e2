import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { StatusSchema, type Status } from "../../gen/google/rpc/status_pb";
import { databaseUnavailable } from "../db/db-errors";
import { AppError, ERROR_DOMAIN, errorMetadata } from "../errors";
import { fromProtocolError } from "./protocol-errors";

/** Every failure as one of our error codes: database outages become SERVICE_UNAVAILABLE. */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const protocol = fromProtocolError(error);
  if (protocol) return protocol;
  const e = error as { code?: string };
  // Raised by the database for writes about a user whose data was deleted (DeleteUserData).
  if (e?.code === "VM001") return new AppError("ACCESS_DENIED", "this user's data was deleted; nothing can be stored for them");
  return databaseUnavailable(error) ?? new AppError("INTERNAL", "internal error");
}

/** What each wire format renders of a failed call. */
export interface ErrorReply {
  error: AppError;
  /** The one google.rpc.ErrorInfo detail: reason, domain, request id, timestamp, subject. */
  info: MessageInitShape<typeof ErrorInfoSchema>;
  /** Seconds, for the retry-after header or trailer. */
  retryAfter: string | undefined;
}

/**
 * The one function that turns a failure into what a client is told, for every wire format (the
 * gRPC renderer in server/grpc-transport.ts, Connect's for Connect, gRPC-Web and plain HTTP) and
 * for the per-item errors of batch replies (errorStatus). Server faults are logged here, once.
 * It sits with the handlers (below the transports) so batch handlers can use it too.
 */
export function errorReply(error: unknown, requestId: string, log: Logger): ErrorReply {
  const appError = toAppError(error);
  if (appError.code === "INTERNAL" || appError.code === "SERVICE_UNAVAILABLE") log.error({ err: error, requestId }, "call failed");
  const retryAfterSeconds = appError.subject.retryAfterSeconds;
  return {
    error: appError,
    info: { reason: appError.code, domain: ERROR_DOMAIN, metadata: errorMetadata(appError, requestId) },
    retryAfter: retryAfterSeconds === undefined ? undefined : String(retryAfterSeconds),
  };
}

/**
 * A failure as google.rpc.Status (code, message, the ErrorInfo detail): what gRPC sends in
 * grpc-status-details-bin, and what a batch reply holds for an item that failed.
 */
export function errorStatus(reply: ErrorReply): Status {
  return create(StatusSchema, {
    code: reply.error.rpcCode,
    message: reply.error.message,
    details: [anyPack(ErrorInfoSchema, create(ErrorInfoSchema, reply.info))],
  });
}
