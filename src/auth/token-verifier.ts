import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import type { JwtConfig } from "../config";
import { AppError } from "../errors";
import { makeCaller, ROLES, type Caller, type Role } from "./caller";
import { isUserId, USER_ID_MAX_CHARS } from "./user-id";

export interface TokenVerifier {
  /**
   * The caller a bearer token proves, or UNAUTHENTICATED (thrown, or as the rejection). A token
   * verified before answers synchronously.
   */
  verify(token: string): Caller | Promise<Caller>;
}

const unauthenticated = (message: string) => new AppError("UNAUTHENTICATED", message);

/**
 * Verifies JWTs with jose (HS256 secret or a JWKS for RS256/ES256) and remembers verified tokens
 * until their exp, so a client that reuses its token costs one Map lookup per call.
 */
export function createTokenVerifier(config: JwtConfig, secret: string | undefined): TokenVerifier {
  const key: Uint8Array | JWTVerifyGetKey = config.jwksUrl
    ? createRemoteJWKSet(new URL(config.jwksUrl))
    : new TextEncoder().encode(secret ?? missingSecret());
  const algorithms = config.jwksUrl ? ["RS256", "ES256"] : ["HS256"];
  const cache = new Map<string, { caller: Caller; expiresAtMs: number }>();

  async function verifyUncached(token: string): Promise<{ caller: Caller; expiresAtMs: number }> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, key as Uint8Array, {
        algorithms,
        issuer: config.issuer,
        audience: config.audience,
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) throw unauthenticated("token expired");
      if (error instanceof joseErrors.JOSEError) throw unauthenticated(`invalid token: ${error.code}`);
      throw error;
    }
    if (typeof payload.sub !== "string" || payload.sub === "") throw unauthenticated("token has no sub");
    // The sub becomes the user id stored in rows, audit events and rate-limit keys.
    if (!isUserId(payload.sub)) {
      throw unauthenticated(
        payload.sub.length > USER_ID_MAX_CHARS
          ? `token sub is ${payload.sub.length} characters long; a user id has at most ${USER_ID_MAX_CHARS}`
          : "token sub holds a character a user id may not have (allowed: A-Z a-z 0-9 . _ : @ | -)",
      );
    }
    // A verified token is remembered until it expires: one that never expires would be trusted forever.
    if (typeof payload.exp !== "number") throw unauthenticated("token has no exp: tokens must expire");
    const roles = parseRoles(payload.roles);
    return { caller: makeCaller(payload.sub, roles), expiresAtMs: payload.exp * 1000 };
  }

  return {
    verify(token) {
      const hit = cache.get(token);
      if (hit && hit.expiresAtMs > Date.now()) return hit.caller;
      if (hit) cache.delete(token);
      return verifyUncached(token).then((verified) => {
        if (config.cacheSize > 0) {
          // Map keeps insertion order: dropping the first key evicts the oldest entry.
          if (cache.size >= config.cacheSize) cache.delete(cache.keys().next().value!);
          cache.set(token, verified);
        }
        return verified.caller;
      });
    },
  };
}

function parseRoles(claim: unknown): Role[] {
  if (claim === undefined) return ["user"];
  if (!Array.isArray(claim) || claim.length === 0) throw unauthenticated("roles claim must be a non-empty array");
  for (const role of claim) {
    if (!ROLES.includes(role)) throw unauthenticated(`unknown role in token: ${String(role)}`);
  }
  return claim as Role[];
}

function missingSecret(): never {
  throw new Error("JWT secret missing: set JWT_SECRET or JWT_JWKS_URL");
}
