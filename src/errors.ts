import { Code } from "@connectrpc/connect";

/**
 * The one closed list of error codes. Each maps to exactly one gRPC/Connect code; the code is
 * sent as the `reason` of a google.rpc.ErrorInfo detail (domain `voicemodel.v1`).
 */
export const ErrorCodes = {
  VOICE_MODEL_NOT_FOUND: Code.NotFound,
  ACCESS_DENIED: Code.PermissionDenied,
  UNAUTHENTICATED: Code.Unauthenticated,
  /** A valid token of a user whose data was deleted (DeleteUserData): no call of theirs is served. */
  USER_ERASED: Code.Unauthenticated,
  INVALID_ARGUMENT: Code.InvalidArgument,
  MODEL_NOT_COMPLETED: Code.FailedPrecondition,
  ALREADY_ACTIVE: Code.AlreadyExists,
  /** A usage event idempotency key reused with a different payload. */
  IDEMPOTENCY_KEY_REUSED: Code.AlreadyExists,
  ETAG_MISMATCH: Code.Aborted,
  /** RollbackActiveModel's expected_active_model_id is not the active model (a racing change won). */
  ACTIVE_MODEL_CHANGED: Code.Aborted,
  /** No activation history entry with that id for the user. */
  HISTORY_ENTRY_NOT_FOUND: Code.NotFound,
  /** The activation history holds no earlier model to make active. */
  NOTHING_TO_ROLL_BACK: Code.FailedPrecondition,
  /** The rollback's model is soft-deleted (UndeleteVoiceModel brings it back). */
  ROLLBACK_TARGET_DELETED: Code.FailedPrecondition,
  /** The rollback's model was purged or is no longer the user's. */
  ROLLBACK_TARGET_GONE: Code.FailedPrecondition,
  /** Sharing is switched off by configuration (SHARING_ENABLED=false). */
  SHARING_DISABLED: Code.FailedPrecondition,
  /** No backup with that id or path for the user. */
  BACKUP_NOT_FOUND: Code.NotFound,
  /** The model has no stored file (nothing uploaded or ingested yet). */
  MODEL_FILE_MISSING: Code.FailedPrecondition,
  /** A stored file or backup failed its integrity check (tampered or damaged storage). */
  FILE_CORRUPT: Code.DataLoss,
  RATE_LIMITED: Code.ResourceExhausted,
  /** A request message or body over the size limit. */
  REQUEST_TOO_LARGE: Code.ResourceExhausted,
  /** No route or RPC at that path. */
  ROUTE_NOT_FOUND: Code.NotFound,
  SERVICE_UNAVAILABLE: Code.Unavailable,
  /** The blob store (model files, backups) did not answer in time or failed; retry later. */
  STORAGE_UNAVAILABLE: Code.Unavailable,
  /** The blob store's disk is full (ENOSPC): nothing was stored; an operator must free space. */
  STORAGE_FULL: Code.ResourceExhausted,
  /** The call's deadline (grpc-timeout, connect-timeout-ms) passed before it finished. */
  DEADLINE_EXCEEDED: Code.DeadlineExceeded,
  /** The instance is shutting down: the call was refused or ended; retry on another instance. */
  SHUTTING_DOWN: Code.Unavailable,
  /** A streamed reply whose reader opened no flow-control window for too long (STREAM_STALL_TIMEOUT_MS). */
  STREAM_STALLED: Code.ResourceExhausted,
  /** WatchVoiceModelEvents resumed from an event older than the retention: resync, then watch anew. */
  EVENTS_EXPIRED: Code.FailedPrecondition,
  /** CONSENT_REQUIRED: the write would make a model without a consent record completed or active. */
  CONSENT_MISSING: Code.FailedPrecondition,
  /** No consent record with that id for the user (or it was revoked). */
  CONSENT_NOT_FOUND: Code.NotFound,
  /** The model already has a consent record. */
  CONSENT_EXISTS: Code.AlreadyExists,
  /** The consent record has no uploaded recording. */
  CONSENT_RECORDING_MISSING: Code.FailedPrecondition,
  /** The backup may hold a model whose consent was withdrawn; it is being rewritten without it. */
  BACKUP_REWRITE_PENDING: Code.FailedPrecondition,
  /** No upload session with that id for the caller (unknown, expired, finished, or another caller's). */
  UPLOAD_NOT_FOUND: Code.NotFound,
  /** An append's offset is not where the upload session stands; the error says where to resume. */
  UPLOAD_OFFSET_MISMATCH: Code.FailedPrecondition,
  /** FinishModelFileUpload before all the declared bytes were received. */
  UPLOAD_INCOMPLETE: Code.FailedPrecondition,
  UNIMPLEMENTED: Code.Unimplemented,
  INTERNAL: Code.Internal,
} as const satisfies Record<string, Code>;

export type ErrorCode = keyof typeof ErrorCodes;

/**
 * Errors that mean a call never passed validation or authorization: a rate-limited call that
 * ends with one gives its slot back ("a call counts once it has passed authentication and
 * validation").
 */
export const NOT_COUNTED_ERRORS: readonly ErrorCode[] = ["INVALID_ARGUMENT", "ACCESS_DENIED", "VOICE_MODEL_NOT_FOUND", "HISTORY_ENTRY_NOT_FOUND", "CONSENT_NOT_FOUND", "UNAUTHENTICATED", "USER_ERASED", "SHARING_DISABLED"];

export const ERROR_DOMAIN = "voicemodel.v1";

/** Context that names what the error is about; lands in ErrorInfo.metadata. */
export interface ErrorSubject {
  field?: string;
  modelId?: string;
  userId?: string;
  /** Seconds until a rate-limited call may be retried. */
  retryAfterSeconds?: number;
  /** The position of the batch item that failed the whole call (all_or_nothing batches, faults). */
  itemIndex?: number;
  /** Bytes an upload session has received: where a client resumes. */
  receivedBytes?: number;
}

export class AppError extends Error {
  override readonly name = "AppError";
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly subject: ErrorSubject = {},
  ) {
    super(message);
  }

  get rpcCode(): Code {
    return ErrorCodes[this.code];
  }
}

export const invalidArgument = (field: string, message: string) =>
  new AppError("INVALID_ARGUMENT", `${field}: ${message}`, { field });

export const modelNotFound = (modelId: string) =>
  new AppError("VOICE_MODEL_NOT_FOUND", `voice model ${modelId} not found`, { modelId });

export const accessDenied = (message: string, subject: ErrorSubject = {}) =>
  new AppError("ACCESS_DENIED", message, subject);

/** ErrorInfo metadata for an error: the subject plus when and for which request. */
export function errorMetadata(error: AppError, requestId: string): Record<string, string> {
  const metadata: Record<string, string> = { timestamp: new Date().toISOString(), requestId };
  for (const [key, value] of Object.entries(error.subject)) {
    if (value !== undefined) metadata[key] = String(value);
  }
  return metadata;
}

/** The same error about item `index` of a batch: its subject also names the position. */
export const atItem = (error: AppError, index: number) => new AppError(error.code, error.message, { ...error.subject, itemIndex: index });
