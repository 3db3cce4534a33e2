import path from "node:path";

/** Every setting of the service, parsed once from the environment at start-up and frozen. */
export interface Config {
  /** Interface both listeners bind to. */
  host: string;
  /** HTTP/1.1 port: Connect JSON, gRPC-Web, /healthz, /readyz. 0 picks a free port. */
  httpPort: number;
  /** HTTP/2 cleartext port: gRPC (grpc-js). 0 picks a free port. */
  grpcPort: number;
  /** PostgreSQL URL; undefined means the embedded PGlite database in dataDir. */
  databaseUrl: string | undefined;
  /**
   * PostgreSQL URL of the one LISTEN connection (cache invalidation across instances); defaults to
   * databaseUrl. Behind a transaction-pooling PgBouncer it must reach PostgreSQL directly.
   */
  databaseListenUrl: string | undefined;
  /** Embedded data folder: PGlite files, the generated JWT secret. */
  dataDir: string;
  /** PostgreSQL pool size per instance. */
  dbPoolMax: number;
  /** How long a query waits for a free pooled connection before failing UNAVAILABLE (overloaded). */
  dbAcquireTimeoutMs: number;
  /** Apply pending migrations at start-up. */
  migrateOnStart: boolean;
  /**
   * Key of the hashes erasure leaves in place of a user id (HMAC-SHA-256), the same on every
   * instance. Undefined: a key file generated in dataDir (embedded mode).
   */
  erasureKey: Buffer | undefined;
  jwt: JwtConfig;
  /** Origins allowed to call the HTTP listener from a browser. */
  corsOrigins: string[];
  logLevel: string;
  usage: UsageConfig;
  cache: CacheConfig;
  events: EventsConfig;
  governance: GovernanceConfig;
  files: FilesConfig;
  transport: TransportConfig;
  shutdown: ShutdownConfig;
}

/** Limits of both listeners, so no client can hold unbounded streams, connections or memory. */
export interface TransportConfig {
  /** gRPC: concurrent streams one connection may open (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS). */
  grpcMaxConcurrentStreams: number;
  /** gRPC: memory (MB) one HTTP/2 session may buffer before new streams are refused. */
  grpcMaxSessionMemoryMb: number;
  /** gRPC: a connection with no call for this long is closed (GOAWAY). */
  grpcMaxConnectionIdleMs: number;
  /** gRPC: a connection older than this is asked to go away; calls on it get the grace below. */
  grpcMaxConnectionAgeMs: number;
  grpcMaxConnectionAgeGraceMs: number;
  /** gRPC: the server pings an idle connection this often and drops it when no answer comes in time. */
  grpcKeepaliveTimeMs: number;
  grpcKeepaliveTimeoutMs: number;
  /** gRPC: a connection that resets (or has reset) more streams than this in a second is closed. */
  grpcMaxResetsPerSecond: number;
  /** HTTP/1.1: time to receive a request's headers, and the whole request. */
  httpHeadersTimeoutMs: number;
  httpRequestTimeoutMs: number;
  /** HTTP/1.1: a request body that sends nothing for this long is cut off. */
  httpBodyIdleTimeoutMs: number;
  /** Open connections each listener accepts; more are closed at once. */
  maxConnections: number;
  /** A streamed reply (file read, export) whose reader takes nothing for this long is ended. */
  streamStallTimeoutMs: number;
  /** Buffer memory grown since the last full garbage collection that starts one (0: never). */
  memoryReclaimMb: number;
}

export interface ShutdownConfig {
  /** After SIGTERM, new calls are still served this long (readiness already red) before being refused. */
  drainDelayMs: number;
  /** Then calls in flight get this long to finish; the rest end with UNAVAILABLE. */
  graceMs: number;
}

function parseTransport(env: Env): TransportConfig {
  return Object.freeze({
    grpcMaxConcurrentStreams: integer(env, "GRPC_MAX_CONCURRENT_STREAMS", 100, 1, 100_000),
    grpcMaxSessionMemoryMb: integer(env, "GRPC_MAX_SESSION_MEMORY_MB", 32, 1, 4096),
    grpcMaxConnectionIdleMs: integer(env, "GRPC_MAX_CONNECTION_IDLE_MS", 300_000, 1_000, 86_400_000),
    grpcMaxConnectionAgeMs: integer(env, "GRPC_MAX_CONNECTION_AGE_MS", 3_600_000, 1_000, 7 * 86_400_000),
    grpcMaxConnectionAgeGraceMs: integer(env, "GRPC_MAX_CONNECTION_AGE_GRACE_MS", 300_000, 0, 86_400_000),
    grpcKeepaliveTimeMs: integer(env, "GRPC_KEEPALIVE_TIME_MS", 60_000, 1_000, 86_400_000),
    grpcKeepaliveTimeoutMs: integer(env, "GRPC_KEEPALIVE_TIMEOUT_MS", 20_000, 100, 3_600_000),
    grpcMaxResetsPerSecond: integer(env, "GRPC_MAX_RESETS_PER_SECOND", 200, 1, 1_000_000),
    httpHeadersTimeoutMs: integer(env, "HTTP_HEADERS_TIMEOUT_MS", 30_000, 100, 3_600_000),
    httpRequestTimeoutMs: integer(env, "HTTP_REQUEST_TIMEOUT_MS", 3_600_000, 1_000, 86_400_000),
    httpBodyIdleTimeoutMs: integer(env, "HTTP_BODY_IDLE_TIMEOUT_MS", 30_000, 100, 3_600_000),
    maxConnections: integer(env, "MAX_CONNECTIONS", 10_000, 1, 1_000_000),
    streamStallTimeoutMs: integer(env, "STREAM_STALL_TIMEOUT_MS", 20_000, 100, 3_600_000),
    memoryReclaimMb: integer(env, "MEMORY_RECLAIM_MB", 128, 0, 1_000_000),
  });
}

export interface UsageConfig {
  /** How long raw usage events (and so their idempotency keys) are kept. */
  retentionDays: number;
  /** How often expired raw events are purged. */
  purgeIntervalMs: number;
}

/** The change-event stream (WatchVoiceModelEvents). */
export interface EventsConfig {
  /** Events older than this are deleted; resuming from one of them is EVENTS_EXPIRED. */
  retentionHours: number;
  /** An idle stream carries a heartbeat this often. */
  heartbeatMs: number;
  /** How often the retention job runs (on one instance of the fleet). */
  pruneIntervalMs: number;
}

export interface CacheConfig {
  /** TTLs of the cache tables cache_voice_models, cache_voice_stats, cache_voice_analytics. */
  modelTtlSeconds: number;
  statsTtlSeconds: number;
  analyticsTtlSeconds: number;
  /** How often expired cache rows are swept, and how many rows one sweep statement deletes. */
  sweepIntervalMs: number;
  sweepBatchSize: number;
  /** How often in-memory hit counts and last access times are written to the cache tables. */
  hitFlushIntervalMs: number;
  /** Models the in-process cache holds (an active model counts 1, a list page its models); 0 turns it off. */
  inProcessEntries: number;
}

/** A sliding-window limit: at most `limit` calls per `windowSeconds`. */
export interface RateLimit {
  limit: number;
  windowSeconds: number;
}

/** Sharing, cleanup, rate limits, audit, metrics and alerts. */
export interface GovernanceConfig {
  sharingEnabled: boolean;
  /** No model without a consent record becomes completed or active. */
  consentRequired: boolean;
  cleanup: {
    minAgeDays: number;
    /** Models with a stored quality_score below this (in thousandths) are candidates. */
    maxQualityMillis: number;
    unusedDays: number;
    /** Clean shared models too (default: a model with shares is kept). */
    includeShared: boolean;
    batchSize: number;
    /** Scheduled run interval; 0 switches the scheduled run off. */
    intervalMs: number;
    /** How long the scheduled run's lease lasts without renewal (a dead leader's lapses). */
    leaseMs: number;
  };
  rateLimits: {
    /** Off only where the limits get in the way (the test harness turns them off by default). */
    enabled: boolean;
    /** Roles not rate limited (default admin and service). */
    exemptRoles: string[];
    create: RateLimit;
    update: RateLimit;
    analytics: RateLimit;
    backup: RateLimit;
  };
  auditRetentionDays: number;
  /** How often counters are flushed to PostgreSQL for the fleet-wide alerts. */
  metricsFlushIntervalMs: number;
  alerts: {
    /** Storage quota in bytes; 0 means none (the storage alert never fires). */
    storageQuotaBytes: number;
    minAverageQuality: number;
    maxErrorRatio: number;
    errorWindowMinutes: number;
    maxEligibleModels: number;
  };
}

function rateLimit(env: Env, name: string, fallback: RateLimit): RateLimit {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  const match = /^(\d{1,9})\/(\d{1,9})$/.exec(raw);
  if (!match || Number(match[2]) === 0) throw new ConfigError(`${name} must be <limit>/<window seconds>, e.g. 5/3600, got "${raw}"`);
  return Object.freeze({ limit: Number(match[1]), windowSeconds: Number(match[2]) });
}

function ratio(env: Env, name: string, fallback: number): number {
  const raw = optional(env, name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > 1) throw new ConfigError(`${name} must be a number from 0 to 1, got "${raw}"`);
  return value;
}

function parseGovernance(env: Env): GovernanceConfig {
  return Object.freeze({
    sharingEnabled: boolean(env, "SHARING_ENABLED", true),
    consentRequired: boolean(env, "CONSENT_REQUIRED", false),
    cleanup: Object.freeze({
      minAgeDays: integer(env, "CLEANUP_MIN_AGE_DAYS", 180, 1, 36_500),
      maxQualityMillis: Math.round(ratio(env, "CLEANUP_MAX_QUALITY", 0.5) * 1000),
      unusedDays: integer(env, "CLEANUP_UNUSED_DAYS", 30, 0, 36_500),
      includeShared: boolean(env, "CLEANUP_INCLUDE_SHARED", false),
      batchSize: integer(env, "CLEANUP_BATCH_SIZE", 1000, 1, 10_000),
      intervalMs: integer(env, "CLEANUP_INTERVAL_MS", 0, 0, 7 * 86_400_000),
      leaseMs: integer(env, "CLEANUP_LEASE_MS", 60_000, 1_000, 3_600_000),
    }),
    rateLimits: Object.freeze({
      enabled: boolean(env, "RATE_LIMITS_ENABLED", true),
      exemptRoles: (optional(env, "RATE_LIMIT_EXEMPT_ROLES") ?? "admin,service").split(",").map((r) => r.trim()).filter(Boolean),
      create: rateLimit(env, "RATE_LIMIT_CREATE", { limit: 5, windowSeconds: 3600 }),
      update: rateLimit(env, "RATE_LIMIT_UPDATE", { limit: 20, windowSeconds: 3600 }),
      analytics: rateLimit(env, "RATE_LIMIT_ANALYTICS", { limit: 60, windowSeconds: 3600 }),
      backup: rateLimit(env, "RATE_LIMIT_BACKUP", { limit: 2, windowSeconds: 86_400 }),
    }),
    auditRetentionDays: integer(env, "AUDIT_RETENTION_DAYS", 90, 1, 36_500),
    metricsFlushIntervalMs: integer(env, "METRICS_FLUSH_INTERVAL_MS", 15_000, 100, 3_600_000),
    alerts: Object.freeze({
      storageQuotaBytes: integer(env, "STORAGE_QUOTA_BYTES", 0, 0, Number.MAX_SAFE_INTEGER),
      minAverageQuality: ratio(env, "ALERT_MIN_AVERAGE_QUALITY", 0.7),
      maxErrorRatio: ratio(env, "ALERT_MAX_ERROR_RATIO", 0.05),
      errorWindowMinutes: integer(env, "ALERT_ERROR_WINDOW_MINUTES", 5, 1, 1440),
      maxEligibleModels: integer(env, "ALERT_MAX_ELIGIBLE_MODELS", 10_000, 0, Number.MAX_SAFE_INTEGER),
    }),
  });
}

export interface JwtConfig {
  /** HS256 secret; when neither it nor jwksUrl is set, a secret file in dataDir is used. */
  secret: string | undefined;
  /** JWKS URL for RS256/ES256 tokens. */
  jwksUrl: string | undefined;
  issuer: string | undefined;
  audience: string | undefined;
  /** How many verified tokens to remember (each until its exp). */
  cacheSize: number;
}

type Env = Record<string, string | undefined>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (["1", "true", "yes"].includes(raw.toLowerCase())) return true;
  if (["0", "false", "no"].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

function optional(env: Env, name: string): string | undefined {
  const raw = env[name]?.trim();
  return raw ? raw : undefined;
}

export function parseConfig(env: Env = process.env): Readonly<Config> {
  const databaseUrl = optional(env, "DATABASE_URL");
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError(`DATABASE_URL must be a postgres:// URL`);
  }
  const databaseListenUrl = optional(env, "DATABASE_LISTEN_URL");
  if (databaseListenUrl && !/^postgres(ql)?:\/\//.test(databaseListenUrl)) {
    throw new ConfigError(`DATABASE_LISTEN_URL must be a postgres:// URL`);
  }
  if (databaseListenUrl && !databaseUrl) throw new ConfigError("DATABASE_LISTEN_URL needs DATABASE_URL (the embedded database has no LISTEN)");
  const secret = optional(env, "JWT_SECRET");
  if (secret !== undefined && secret.length < 32) {
    throw new ConfigError("JWT_SECRET must be at least 32 characters");
  }
  const jwksUrl = optional(env, "JWT_JWKS_URL");
  if (jwksUrl !== undefined && !/^https?:\/\//.test(jwksUrl)) {
    throw new ConfigError("JWT_JWKS_URL must be an http(s) URL");
  }
  return Object.freeze({
    host: optional(env, "HOST") ?? "127.0.0.1",
    httpPort: integer(env, "PORT", 8080, 0, 65535),
    grpcPort: integer(env, "GRPC_PORT", 50051, 0, 65535),
    databaseUrl,
    databaseListenUrl: databaseListenUrl ?? databaseUrl,
    dataDir: path.resolve(optional(env, "DATA_DIR") ?? "data"),
    dbPoolMax: integer(env, "DB_POOL_MAX", 10, 1, 1000),
    dbAcquireTimeoutMs: integer(env, "DB_ACQUIRE_TIMEOUT_MS", 5_000, 50, 600_000),
    migrateOnStart: boolean(env, "MIGRATE_ON_START", true),
    erasureKey: erasureKey(optional(env, "ERASURE_KEY")),
    jwt: Object.freeze({
      secret,
      jwksUrl,
      issuer: optional(env, "JWT_ISSUER"),
      audience: optional(env, "JWT_AUDIENCE"),
      cacheSize: integer(env, "JWT_CACHE_SIZE", 10_000, 0, 10_000_000),
    }),
    corsOrigins: (optional(env, "CORS_ORIGINS") ?? "").split(",").map((o) => o.trim()).filter(Boolean),
    logLevel: optional(env, "LOG_LEVEL") ?? "info",
    usage: Object.freeze({
      retentionDays: integer(env, "USAGE_RETENTION_DAYS", 90, 1, 3650),
      purgeIntervalMs: integer(env, "USAGE_PURGE_INTERVAL_MS", 3_600_000, 1_000, 86_400_000),
    }),
    cache: Object.freeze({
      modelTtlSeconds: integer(env, "CACHE_MODEL_TTL_SECONDS", 3600, 1, 86_400),
      statsTtlSeconds: integer(env, "CACHE_STATS_TTL_SECONDS", 300, 1, 86_400),
      analyticsTtlSeconds: integer(env, "CACHE_ANALYTICS_TTL_SECONDS", 900, 1, 86_400),
      sweepIntervalMs: integer(env, "CACHE_SWEEP_INTERVAL_MS", 60_000, 100, 86_400_000),
      sweepBatchSize: integer(env, "CACHE_SWEEP_BATCH_SIZE", 1000, 1, 100_000),
      hitFlushIntervalMs: integer(env, "CACHE_HIT_FLUSH_INTERVAL_MS", 5_000, 10, 3_600_000),
      inProcessEntries: integer(env, "IN_PROCESS_CACHE_ENTRIES", 100_000, 0, 10_000_000),
    }),
    events: Object.freeze({
      retentionHours: integer(env, "EVENT_RETENTION_HOURS", 72, 1, 24 * 3650),
      heartbeatMs: integer(env, "EVENT_HEARTBEAT_SECONDS", 15, 1, 3600) * 1000,
      pruneIntervalMs: integer(env, "EVENT_PRUNE_INTERVAL_MS", 600_000, 100, 86_400_000),
    }),
    governance: parseGovernance(env),
    files: parseFiles(env),
    transport: parseTransport(env),
    shutdown: Object.freeze({
      drainDelayMs: integer(env, "SHUTDOWN_DRAIN_DELAY_MS", 0, 0, 600_000),
      graceMs: integer(env, "SHUTDOWN_GRACE_MS", 8_000, 0, 600_000),
    }),
  });
}

/** Model files, blob storage and encryption at rest. */
export interface FilesConfig {
  /** Where model files and backups live: the local data folder or a GCS bucket. */
  blobStore: "fs" | "gcs";
  /** fs: root folder of the objects (default <DATA_DIR>/blobs). */
  fsRoot: string;
  gcs: { bucket: string | undefined; prefix: string; apiEndpoint: string | undefined; projectId: string | undefined };
  /**
   * Master keys (32 bytes each); the first wraps new data keys, the others only unwrap (rotation).
   * Undefined: a key file generated in DATA_DIR (embedded mode).
   */
  masterKeys: readonly Buffer[] | undefined;
  /** Orphaned objects (no row refers to them) younger than this are left alone (uploads in flight). */
  orphanGraceMs: number;
  /** Soft-deleted models can be undeleted for this long; then the purge job removes them. */
  retentionDays: number;
  /** How often the purge job and orphan sweep run. */
  purgeIntervalMs: number;
  /** Largest model file accepted (bytes). */
  maxFileBytes: number;
  /** An upload session with no append for this long expires; its staged bytes are deleted. */
  uploadExpiryMs: number;
  /** GCS: how long a call may wait for the first byte of a reply (connect, headers, first chunk). */
  storageConnectTimeoutMs: number;
  /** GCS: how long a transfer may make no progress; no cap on its total time. */
  storageIdleTimeoutMs: number;
  /** How often the blob store's health is probed (for /readyz's body, gRPC health, a metric). */
  storageProbeIntervalMs: number;
}

function erasureKey(raw: string | undefined): Buffer | undefined {
  if (raw === undefined) return undefined;
  const key = Buffer.from(raw, "base64");
  if (key.length !== 32) throw new ConfigError("ERASURE_KEY must be 32 bytes in base64 (openssl rand -base64 32)");
  return key;
}

function masterKey(name: string, raw: string): Buffer {
  const key = Buffer.from(raw, "base64");
  if (key.length !== 32) throw new ConfigError(`${name} must be 32 bytes in base64 (openssl rand -base64 32)`);
  return key;
}

function parseFiles(env: Env): FilesConfig {
  const blobStore = optional(env, "BLOB_STORE") ?? "fs";
  if (blobStore !== "fs" && blobStore !== "gcs") throw new ConfigError(`BLOB_STORE must be fs or gcs, got "${blobStore}"`);
  const bucket = optional(env, "GCS_BUCKET");
  if (blobStore === "gcs" && !bucket) throw new ConfigError("GCS_BUCKET is required when BLOB_STORE=gcs");
  const current = optional(env, "MASTER_KEY");
  const previous = (optional(env, "MASTER_KEYS_PREVIOUS") ?? "").split(",").map((k) => k.trim()).filter(Boolean);
  if (!current && previous.length > 0) throw new ConfigError("MASTER_KEYS_PREVIOUS needs MASTER_KEY");
  const apiEndpoint = optional(env, "GCS_API_ENDPOINT");
  if (apiEndpoint !== undefined && !/^https?:\/\//.test(apiEndpoint)) throw new ConfigError("GCS_API_ENDPOINT must be an http(s) URL");
  return Object.freeze({
    blobStore,
    fsRoot: path.resolve(optional(env, "BLOB_DIR") ?? path.join(optional(env, "DATA_DIR") ?? "data", "blobs")),
    gcs: Object.freeze({ bucket, prefix: optional(env, "GCS_PREFIX") ?? "", apiEndpoint, projectId: optional(env, "GCS_PROJECT_ID") }),
    masterKeys: current ? Object.freeze([masterKey("MASTER_KEY", current), ...previous.map((k) => masterKey("MASTER_KEYS_PREVIOUS", k))]) : undefined,
    orphanGraceMs: integer(env, "ORPHAN_GRACE_SECONDS", 86_400, 0, 365 * 86_400) * 1000,
    retentionDays: integer(env, "DELETED_RETENTION_DAYS", 30, 0, 36_500),
    purgeIntervalMs: integer(env, "FILE_PURGE_INTERVAL_MS", 3_600_000, 100, 7 * 86_400_000),
    maxFileBytes: integer(env, "MAX_MODEL_FILE_BYTES", 8 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
    uploadExpiryMs: integer(env, "UPLOAD_EXPIRY_HOURS", 24, 1, 30 * 24) * 3_600_000,
    storageConnectTimeoutMs: integer(env, "STORAGE_CONNECT_TIMEOUT_MS", 5_000, 50, 600_000),
    storageIdleTimeoutMs: integer(env, "STORAGE_IDLE_TIMEOUT_MS", 5_000, 50, 600_000),
    storageProbeIntervalMs: integer(env, "STORAGE_PROBE_INTERVAL_MS", 10_000, 100, 3_600_000),
  });
}
