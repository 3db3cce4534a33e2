import { createHash, createHmac, randomBytes } from "node:crypto";
import { readOrCreateSecretFile } from "../data-dir-secret";

/** The unkeyed SHA-256 hex of an id: what erasure wrote before its hashes were keyed. */
export const sha256Hex = (value: string) => createHash("sha256").update(value, "utf8").digest("hex");

/** Name of the transaction setting that hands the erasure key to the database's trigger. */
export const ERASURE_KEY_SETTING = "voice_model.erasure_key";

/**
 * The hash erasure leaves in place of a user id: HMAC-SHA-256 under a server-held key of the
 * id's SHA-256. A plain hash of a guessable id would let anyone reading the audit log confirm a
 * person was erased; without the key it cannot be recomputed. Hashing the SHA-256 (not the id)
 * makes a row hashed the old way convertible without the id: HMAC(key, old hash).
 */
export class UserHasher {
  /**
   * The key as the database's trigger takes it: its two HMAC pads (key XOR 0x36, key XOR 0x5c,
   * 64 bytes each), hex. They are as secret as the key; SQL then needs no loop over its bytes.
   */
  readonly sqlKey: string;
  /** A value that tells keys apart without revealing them (stored to catch instances that differ). */
  readonly keyCheck: string;

  constructor(private readonly key: Buffer) {
    if (key.length < 32) throw new Error("the erasure key must be at least 32 bytes");
    if (key.length > 64) throw new Error("the erasure key must be at most 64 bytes");
    const block = Buffer.concat([key, Buffer.alloc(64 - key.length)]);
    this.sqlKey = Buffer.concat([block.map((b) => b ^ 0x36), block.map((b) => b ^ 0x5c)]).toString("hex");
    this.keyCheck = createHmac("sha256", key).update("voice-model erasure key check", "utf8").digest("hex");
  }

  /** The keyed hash of a user id. */
  hash(userId: string): string {
    return this.rehash(sha256Hex(userId));
  }

  /** The keyed hash from the unkeyed one (rows erased before the key existed). */
  rehash(legacyHash: string): string {
    return createHmac("sha256", this.key).update(legacyHash, "utf8").digest("hex");
  }
}

/**
 * The erasure key: the configured one (ERASURE_KEY), or (embedded mode) a key file in the data
 * folder, made on first start.
 */
export function loadErasureKey(configured: Buffer | undefined, dataDir: string): Buffer {
  if (configured) return configured;
  const { file, value } = readOrCreateSecretFile(dataDir, "erasure-key", () => randomBytes(32).toString("base64"));
  const key = Buffer.from(value, "base64");
  if (key.length !== 32) throw new Error(`${file} does not hold a base64 32-byte key`);
  return key;
}
