import type { Bucket } from "@google-cloud/storage";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BlobNotFoundError, checkKey, checkPrefix, type BlobInfo, type BlobStore, type GetOptions, type PutOptions } from "./blob-store";

export interface GcsBlobStoreOptions {
  /** A bucket handle from the caller's Storage client (credentials, apiEndpoint are theirs). */
  bucket: Bucket;
  /** Key prefix inside the bucket, e.g. "voice-models/" (may be empty). */
  prefix?: string;
}

const isNotFound = (error: unknown) => (error as { code?: number })?.code === 404;

/** Objects in a Google Cloud Storage bucket under a prefix, through @google-cloud/storage. */
export class GcsBlobStore implements BlobStore {
  private readonly bucket: Bucket;
  private readonly prefix: string;

  constructor(options: GcsBlobStoreOptions) {
    this.bucket = options.bucket;
    const prefix = options.prefix ?? "";
    this.prefix = prefix === "" || prefix.endsWith("/") ? prefix : `${prefix}/`;
  }

  private file(key: string) {
    return this.bucket.file(this.prefix + checkKey(key));
  }

  async put(key: string, body: Readable | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<{ size: number }> {
    let size = 0;
    const counted = async function* () {
      for await (const chunk of body) {
        size += chunk.length;
        yield chunk;
      }
    };
    // One resumable session streamed in a single request: the object appears only when the
    // upload completes, so an interrupted upload leaves nothing visible.
    await pipeline(counted, this.file(key).createWriteStream({ resumable: true, contentType: "application/octet-stream" }), {
      signal: options.signal,
    });
    return { size };
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const info = await this.stat(key);
    if (!info) throw new BlobNotFoundError(key);
    const start = options.start ?? 0;
    const end = Math.min(options.end ?? info.size - 1, info.size - 1);
    if (end < start) return Readable.from([]);
    return this.file(key).createReadStream({ start, end, validation: false });
  }

  async stat(key: string): Promise<BlobInfo | undefined> {
    try {
      const [metadata] = await this.file(key).getMetadata();
      return { key, size: Number(metadata.size ?? 0), updatedAt: new Date(String(metadata.updated ?? metadata.timeCreated ?? 0)) };
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    checkPrefix(prefix);
    let pageToken: string | undefined;
    do {
      const [files, next] = await this.bucket.getFiles({ prefix: this.prefix + prefix, autoPaginate: false, maxResults: 1000, pageToken });
      for (const f of files) {
        yield {
          key: f.name.slice(this.prefix.length),
          size: Number(f.metadata.size ?? 0),
          updatedAt: new Date(String(f.metadata.updated ?? f.metadata.timeCreated ?? 0)),
        };
      }
      pageToken = (next as { pageToken?: string } | null)?.pageToken;
    } while (pageToken);
  }

  async copy(from: string, to: string): Promise<void> {
    try {
      await this.file(from).copy(this.file(to));
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(from);
      throw error;
    }
  }

  async move(from: string, to: string): Promise<void> {
    try {
      await this.file(from).move(this.file(to));
    } catch (error) {
      if (isNotFound(error)) throw new BlobNotFoundError(from);
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    try {
      await this.file(key).delete();
    } catch (error) {
      if (!isNotFound(error)) throw error;
    }
  }
}
