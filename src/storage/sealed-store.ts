import { Readable } from "node:stream";
import type { BlobStore } from "./blob-store";
import type { KeyProvider, WrappedKey } from "./key-provider";
import {
  chunkOffsets,
  CorruptObjectError,
  HEADER_BYTES,
  INDEX_FOOTER_BYTES,
  newDataKey,
  parseHeader,
  parseIndexFooter,
  seal,
  unseal,
} from "./sealed-format";

/** A sealed object as its database row records it. */
export interface SealedRef extends WrappedKey {
  /** The object's key in the blob store. */
  key: string;
}

export interface SealedObject extends SealedRef {
  /** Plaintext bytes. */
  size: number;
  /** Bytes in the blob store. */
  storedSize: number;
  sha256: string;
  compressed: boolean;
}

/** Plaintext byte range, end inclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

/**
 * Writes and reads sealed objects (see sealed-format.ts) in a blob store: encryption at rest with
 * a fresh data key per object, wrapped by the key provider. Callers never see the data key.
 */
export class SealedStore {
  constructor(
    readonly blobs: BlobStore,
    readonly keys: KeyProvider,
    private readonly chunkSize?: number,
  ) {}

  /** Seals a plaintext stream under key (a fresh key: see STYLE habit 7). */
  async write(key: string, source: AsyncIterable<Uint8Array>, options: { compression?: "auto" | "never" } = {}): Promise<SealedObject> {
    const dataKey = newDataKey();
    const wrapped = await this.keys.wrap(dataKey);
    const { stream, summary } = seal(source, { dataKey, chunkSize: this.chunkSize, compression: options.compression });
    const { size: storedSize } = await this.blobs.put(key, Readable.from(stream, { objectMode: false }));
    return { key, ...wrapped, storedSize, ...summary };
  }

  /**
   * The plaintext of a sealed object, or of a byte range of it. Fails with CorruptObjectError at
   * the first chunk that does not authenticate; nothing unauthenticated is yielded.
   */
  async read(ref: SealedRef, range?: ByteRange): Promise<AsyncIterable<Buffer>> {
    const dataKey = await this.keys.unwrap(ref);
    const header = await readAll(await this.blobs.get(ref.key, { start: 0, end: HEADER_BYTES - 1 }));
    const { chunkSize } = parseHeader(header);
    if (range && (!Number.isSafeInteger(range.start) || range.start < 0)) throw new RangeError(`bad range start ${range.start}`);
    if (!range) return unseal(await this.blobs.get(ref.key, { start: HEADER_BYTES }), { dataKey, header });

    const info = await this.blobs.stat(ref.key);
    if (!info || info.size < HEADER_BYTES + INDEX_FOOTER_BYTES) throw new CorruptObjectError(`object ${ref.key} is truncated`);
    const footer = await readAll(await this.blobs.get(ref.key, { start: info.size - INDEX_FOOTER_BYTES, end: info.size - 1 }));
    const { chunkCount, size } = parseIndexFooter(footer);
    const indexStart = info.size - INDEX_FOOTER_BYTES - chunkCount * 4;
    if (indexStart < HEADER_BYTES) throw new CorruptObjectError(`object ${ref.key} has a bad index`);
    const index = chunkCount === 0 ? Buffer.alloc(0) : await readAll(await this.blobs.get(ref.key, { start: indexStart, end: indexStart + chunkCount * 4 - 1 }));
    const offsets = chunkOffsets(index, chunkCount);
    if (offsets[chunkCount] !== indexStart) throw new CorruptObjectError(`object ${ref.key} has a bad index`);
    const end = Math.min(range.end, size - 1);
    if (range.start > end) return (async function* () {})();
    const first = Math.floor(range.start / chunkSize);
    const last = Math.floor(end / chunkSize);
    const stored = await this.blobs.get(ref.key, { start: offsets[first], end: offsets[last + 1] - 1 });
    return unseal(stored, { dataKey, header, firstChunk: first, skip: range.start - first * chunkSize, length: end - range.start + 1 });
  }
}
