import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { readOrCreateSecretFile } from "../data-dir-secret";

/** A data key wrapped by a master key, as stored in the database next to the object it opens. */
export interface WrappedKey {
  /** Which master key wrapped it. */
  keyId: string;
  wrapped: Buffer;
}

/**
 * Wraps and unwraps per-object data keys. The local implementation holds master keys in memory;
 * a Cloud KMS one would call KMS for both (data keys never leave this process unwrapped).
 */
export interface KeyProvider {
  /** The id new data keys are wrapped with. */
  readonly currentKeyId: string;
  wrap(dataKey: Buffer): Promise<WrappedKey>;
  /** Rejects when keyId is unknown or the wrapped key was tampered with. */
  unwrap(key: WrappedKey): Promise<Buffer>;
}

export class KeyUnavailableError extends Error {
  override readonly name = "KeyUnavailableError";
}

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A master key's id: a short hash of it, so rotated keys are told apart without a registry. */
export const masterKeyId = (key: Buffer) => `local:${createHash("sha256").update(key).digest("hex").slice(0, 16)}`;

/**
 * Master keys held locally (from config or the embedded key file). The first key wraps new data
 * keys; the others only unwrap, until rewrapping moved every row to the first.
 */
export class LocalKeyProvider implements KeyProvider {
  private readonly keys = new Map<string, Buffer>();
  readonly currentKeyId: string;

  constructor(masterKeys: Buffer[]) {
    if (masterKeys.length === 0) throw new Error("LocalKeyProvider needs at least one master key");
    for (const key of masterKeys) {
      if (key.length !== 32) throw new Error("a master key must be 32 bytes (AES-256)");
      this.keys.set(masterKeyId(key), key);
    }
    this.currentKeyId = masterKeyId(masterKeys[0]);
  }

  async wrap(dataKey: Buffer): Promise<WrappedKey> {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.keys.get(this.currentKeyId)!, iv);
    cipher.setAAD(Buffer.from(this.currentKeyId));
    const body = Buffer.concat([cipher.update(dataKey), cipher.final()]);
    return { keyId: this.currentKeyId, wrapped: Buffer.concat([iv, body, cipher.getAuthTag()]) };
  }

  async unwrap({ keyId, wrapped }: WrappedKey): Promise<Buffer> {
    const master = this.keys.get(keyId);
    if (!master) throw new KeyUnavailableError(`master key ${keyId} is not configured`);
    const decipher = createDecipheriv("aes-256-gcm", master, wrapped.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(keyId));
    decipher.setAuthTag(wrapped.subarray(wrapped.length - TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(wrapped.subarray(IV_BYTES, wrapped.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new KeyUnavailableError(`the data key wrapped by ${keyId} does not authenticate`);
    }
  }
}

/** The embedded mode's master key: created on first start in the data folder (mode 0600). */
export function loadOrCreateMasterKeyFile(dataDir: string): Buffer {
  const { file, value } = readOrCreateSecretFile(dataDir, "master-key", () => randomBytes(32).toString("base64"));
  const key = Buffer.from(value, "base64");
  if (key.length !== 32) throw new Error(`${file} does not hold a base64 32-byte key`);
  return key;
}
