import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

const SECRET_FILE = "jwt-secret";

/**
 * The embedded mode's HS256 secret: created on first start in the data folder (mode 0600) so
 * `npm run token` can mint tokens for it without touching the database.
 */
export function loadOrCreateSecret(dataDir: string): string {
  const file = path.join(dataDir, SECRET_FILE);
  fs.mkdirSync(dataDir, { recursive: true });
  try {
    fs.writeFileSync(file, randomBytes(48).toString("base64url") + "\n", { flag: "wx", mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  return readSecret(dataDir);
}

export function readSecret(dataDir: string): string {
  const secret = fs.readFileSync(path.join(dataDir, SECRET_FILE), "utf8").trim();
  if (secret.length < 32) throw new Error(`${path.join(dataDir, SECRET_FILE)} holds no usable secret`);
  return secret;
}
