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
  /** Embedded data folder: PGlite files, the generated JWT secret. */
  dataDir: string;
  /** PostgreSQL pool size per instance. */
  dbPoolMax: number;
  /** Apply pending migrations at start-up. */
  migrateOnStart: boolean;
  jwt: JwtConfig;
  /** Origins allowed to call the HTTP listener from a browser. */
  corsOrigins: string[];
  logLevel: string;
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
    dataDir: path.resolve(optional(env, "DATA_DIR") ?? "data"),
    dbPoolMax: integer(env, "DB_POOL_MAX", 10, 1, 1000),
    migrateOnStart: boolean(env, "MIGRATE_ON_START", true),
    jwt: Object.freeze({
      secret,
      jwksUrl,
      issuer: optional(env, "JWT_ISSUER"),
      audience: optional(env, "JWT_AUDIENCE"),
      cacheSize: integer(env, "JWT_CACHE_SIZE", 10_000, 0, 10_000_000),
    }),
    corsOrigins: (optional(env, "CORS_ORIGINS") ?? "").split(",").map((o) => o.trim()).filter(Boolean),
    logLevel: optional(env, "LOG_LEVEL") ?? "info",
  });
}
