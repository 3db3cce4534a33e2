import type { Readable } from "node:stream";

/** What a store knows about one object. */
export interface BlobInfo {
  key: string;
  size: number;
  /** When the object was last written. */
  updatedAt: Date;
}

export interface GetOptions {
  /** First byte to return (default 0). */
  start?: number;
  /** Last byte to return, inclusive (default: the end of the object). */
  end?: number;
}

export interface PutOptions {
  /** Aborting it stops the write (its promise rejects and nothing appears under the key). */
  signal?: AbortSignal;
}

/**
 * A flat namespace of objects under '/'-separated keys. Keys are relative ("u1/m1/file"): no
 * leading '/', no '.' or '..' segments, no empty segments. Implementations: fs-blob-store.ts
 * (local folder) and gcs-blob-store.ts (a bucket and prefix). Both pass test/contract/blob-store.
 */
export interface BlobStore {
  /** Writes an object from a stream; replaces any object under the key. Resolves with its size. */
  put(key: string, body: Readable | AsyncIterable<Uint8Array>, options?: PutOptions): Promise<{ size: number }>;
  /** Streams an object or a byte range of it. Rejects with BlobNotFoundError when absent. */
  get(key: string, options?: GetOptions): Promise<Readable>;
  /** The object's size and time, or undefined when absent. */
  stat(key: string): Promise<BlobInfo | undefined>;
  /** Every object whose key starts with prefix (a plain string prefix, not only folders). */
  list(prefix: string): AsyncIterable<BlobInfo>;
  /** Copies an object to another key (replacing it). Rejects with BlobNotFoundError when absent. */
  copy(from: string, to: string): Promise<void>;
  /** Moves an object to another key (replacing it). Rejects with BlobNotFoundError when absent. */
  move(from: string, to: string): Promise<void>;
  /** Deletes an object; deleting an absent object is not an error. */
  delete(key: string): Promise<void>;
}

export class BlobNotFoundError extends Error {
  override readonly name = "BlobNotFoundError";
  constructor(readonly key: string) {
    super(`object ${key} not found`);
  }
}

export class InvalidBlobKeyError extends Error {
  override readonly name = "InvalidBlobKeyError";
  constructor(readonly key: string, reason: string) {
    super(`invalid object key ${JSON.stringify(key)}: ${reason}`);
  }
}

/** Throws unless key is a safe relative key (see BlobStore); returns it. */
export function checkKey(key: string): string {
  if (typeof key !== "string" || key.length === 0) throw new InvalidBlobKeyError(String(key), "empty");
  if (key.length > 1024) throw new InvalidBlobKeyError(key, "longer than 1024 characters");
  if (key.startsWith("/")) throw new InvalidBlobKeyError(key, "starts with /");
  if (/[\\\0\r\n]/.test(key)) throw new InvalidBlobKeyError(key, "contains a backslash or control character");
  for (const segment of key.split("/")) {
    if (segment === "" || segment === "." || segment === "..") throw new InvalidBlobKeyError(key, `bad segment "${segment}"`);
  }
  return key;
}

/** A prefix for list(): like a key, but may be empty or end with '/'. */
export function checkPrefix(prefix: string): string {
  if (prefix === "") return prefix;
  checkKey(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix);
  return prefix;
}
