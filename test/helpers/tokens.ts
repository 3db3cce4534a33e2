import { SignJWT } from "jose";
import { JWT_SECRET } from "./env";

export interface TokenOptions {
  /** The `roles` claim; omitted when undefined (the service then assumes ["user"]). */
  roles?: unknown;
  /** Seconds from now; negative makes an expired token. Default one hour. */
  expiresInSeconds?: number;
  secret?: string;
  alg?: "HS256" | "HS384" | "HS512";
  issuer?: string;
  audience?: string;
  /** Leave out `sub`. */
  noSubject?: boolean;
  /** Leave out `exp`. */
  noExpiry?: boolean;
}

/** Signs a JWT the way an identity provider would (HS256 with the test secret by default). */
export async function mintToken(sub: string, options: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = {};
  if (options.roles !== undefined) claims.roles = options.roles;
  let jwt = new SignJWT(claims).setProtectedHeader({ alg: options.alg ?? "HS256" }).setIssuedAt(now - 60);
  if (!options.noExpiry) jwt = jwt.setExpirationTime(now + (options.expiresInSeconds ?? 3600));
  if (!options.noSubject) jwt = jwt.setSubject(sub);
  if (options.issuer) jwt = jwt.setIssuer(options.issuer);
  if (options.audience) jwt = jwt.setAudience(options.audience);
  return jwt.sign(new TextEncoder().encode(options.secret ?? JWT_SECRET));
}

export const userToken = (sub: string) => mintToken(sub);
export const serviceToken = (sub = "training-service") => mintToken(sub, { roles: ["service"] });
export const adminToken = (sub = "ops-admin") => mintToken(sub, { roles: ["admin"] });
/** Expired an hour ago (well past any clock tolerance). */
export const expiredToken = (sub: string) => mintToken(sub, { expiresInSeconds: -3600 });
/** Well-formed but signed with another secret. */
export const badlySignedToken = (sub: string) => mintToken(sub, { secret: "another-secret-that-the-service-does-not-know" });
