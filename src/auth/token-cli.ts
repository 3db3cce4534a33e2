// Prints a token for the embedded mode's secret: npm run token -- <userId> [--role admin|service] [--ttl 3600]
// It reads only the secret (JWT_SECRET or the data folder's file) and never opens the database.
import { SignJWT } from "jose";
import { parseArgs } from "node:util";
import { parseConfig } from "../config";
import { ROLES, type Role } from "./caller";
import { loadOrCreateSecret } from "./secret-file";

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { role: { type: "string", multiple: true }, ttl: { type: "string", default: "86400" } },
  });
  const userId = positionals[0];
  if (!userId) throw new Error("usage: npm run token -- <userId> [--role admin|service] [--ttl seconds]");
  const roles = (values.role ?? ["user"]) as Role[];
  for (const role of roles) if (!ROLES.includes(role)) throw new Error(`unknown role ${role}; one of ${ROLES.join(", ")}`);
  const ttl = Number(values.ttl);
  if (!Number.isInteger(ttl) || ttl <= 0) throw new Error("--ttl must be a positive number of seconds");

  const config = parseConfig();
  if (config.jwt.jwksUrl) throw new Error("JWT_JWKS_URL is set: tokens come from your identity provider");
  const secret = config.jwt.secret ?? loadOrCreateSecret(config.dataDir);
  let jwt = new SignJWT({ roles }).setProtectedHeader({ alg: "HS256" }).setSubject(userId).setIssuedAt().setExpirationTime(`${ttl}s`);
  if (config.jwt.issuer) jwt = jwt.setIssuer(config.jwt.issuer);
  if (config.jwt.audience) jwt = jwt.setAudience(config.jwt.audience);
  process.stdout.write((await jwt.sign(new TextEncoder().encode(secret))) + "\n");
}

main().catch((error: Error) => {
  process.stderr.write(`token: ${error.message}\n`);
  process.exit(1);
});
