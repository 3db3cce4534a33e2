import { randomBytes } from "node:crypto";
import { readOrCreateSecretFile } from "../data-dir-secret";

/**
 * The embedded mode's HS256 secret: created on first start in the data folder (mode 0600) so
 * `npm run token` can mint tokens for it without touching the database.
 */
export function loadOrCreateSecret(dataDir: string): string {
  const { file, value } = readOrCreateSecretFile(dataDir, "jwt-secret", () => randomBytes(48).toString("base64url"));
  if (value.length < 32) throw new Error(`${file} holds no usable secret`);
  return value;
}
