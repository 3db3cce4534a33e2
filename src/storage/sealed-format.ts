import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { promisify } from "node:util";
import zlib from "node:zlib";

/*
 * The sealed object format: every model file and backup the service stores is written this way.
 *
 *   header  16 bytes  "VMS1" | version u8 (1) | flags u8 (bit 0: chunks are deflate-raw compressed)
 *                     | reserved u16 | chunkSize u32 (plaintext bytes per chunk) | reserved u32
 *   chunk*            u32 (bit 31: last chunk; bits 0-30: sealed length) | ciphertext | GCM tag (16)
 *   index             u32 sealed length per chunk | chunkCount u32 | plaintextSize u64 | "VMSI"
 *
 * Each chunk holds chunkSize plaintext bytes (the last one fewer; an empty file is one empty
 * chunk), optionally compressed, sealed with AES-256-GCM under the object's own data key. The
 * nonce is the chunk's index (a data key seals one object only, so nonces never repeat) and the
 * additional data is header | index u64 | last u8: a flipped, moved, dropped or appended chunk
 * fails authentication, and a stream that ends before its last chunk is truncated. The index only
 * locates chunks for byte ranges; a wrong index just makes authentication fail.
 */

export const MAGIC = Buffer.from("VMS1");
const INDEX_MAGIC = Buffer.from("VMSI");
export const HEADER_BYTES = 16;
const TAG_BYTES = 16;
const LAST_BIT = 0x8000_0000;
export const INDEX_FOOTER_BYTES = 16;
export const DEFAULT_CHUNK_SIZE = 1 << 20;
/** Compress when a sample shrinks by at least this share. */
const MIN_SAVING = 0.1;

const deflate = promisify(zlib.deflateRaw);
const inflate = promisify(zlib.inflateRaw);

export class CorruptObjectError extends Error {
  override readonly name = "CorruptObjectError";
}

export interface SealSummary {
  /** Plaintext bytes. */
  size: number;
  /** SHA-256 of the plaintext, hex. */
  sha256: string;
  compressed: boolean;
}

export interface SealOptions {
  dataKey: Buffer;
  chunkSize?: number;
  /** "auto" (default) decides from the first chunk. */
  compression?: "auto" | "never";
}

function header(chunkSize: number, compressed: boolean): Buffer {
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt8(1, 4);
  h.writeUInt8(compressed ? 1 : 0, 5);
  h.writeUInt32BE(chunkSize, 8);
  return h;
}

export function parseHeader(h: Buffer): { chunkSize: number; compressed: boolean } {
  if (h.length < HEADER_BYTES || !h.subarray(0, 4).equals(MAGIC) || h.readUInt8(4) !== 1) {
    throw new CorruptObjectError("not a sealed object (bad header)");
  }
  const chunkSize = h.readUInt32BE(8);
  if (chunkSize === 0 || chunkSize > 64 << 20) throw new CorruptObjectError("not a sealed object (bad chunk size)");
  return { chunkSize, compressed: (h.readUInt8(5) & 1) === 1 };
}

const nonce = (index: number) => {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(BigInt(index), 4);
  return n;
};

const aad = (h: Buffer, index: number, last: boolean) => {
  const a = Buffer.alloc(HEADER_BYTES + 9);
  h.copy(a, 0, 0, HEADER_BYTES);
  a.writeBigUInt64BE(BigInt(index), HEADER_BYTES);
  a.writeUInt8(last ? 1 : 0, HEADER_BYTES + 8);
  return a;
};

export const newDataKey = () => randomBytes(32);

/** Re-cuts a byte stream into chunks of exactly size bytes (the last one shorter). */
async function* rechunk(source: AsyncIterable<Uint8Array>, size: number): AsyncIterable<Buffer> {
  let parts: Buffer[] = [];
  let held = 0;
  for await (const piece of source) {
    let buf = Buffer.isBuffer(piece) ? piece : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    while (held + buf.length >= size) {
      const take = size - held;
      parts.push(buf.subarray(0, take));
      yield parts.length === 1 ? parts[0] : Buffer.concat(parts);
      parts = [];
      held = 0;
      buf = buf.subarray(take);
    }
    if (buf.length > 0) {
      // Copy: the producer may reuse its buffer.
      parts.push(Buffer.from(buf));
      held += buf.length;
    }
  }
  if (held > 0) yield Buffer.concat(parts);
}

/**
 * Seals a plaintext stream into the sealed format, chunk by chunk (memory stays at about two
 * chunks). `summary` is complete once the returned iterable has been fully consumed.
 */
export function seal(source: AsyncIterable<Uint8Array>, options: SealOptions): { stream: AsyncIterable<Buffer>; summary: SealSummary } {
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const summary: SealSummary = { size: 0, sha256: "", compressed: false };
  const hash = createHash("sha256");
  async function* run(): AsyncIterable<Buffer> {
    let h: Buffer | undefined;
    const lengths: number[] = [];
    let index = 0;
    const sealChunk = async (plain: Buffer, last: boolean) => {
      const body = summary.compressed ? await deflate(plain, { level: 3 }) : plain;
      const cipher = createCipheriv("aes-256-gcm", options.dataKey, nonce(index));
      cipher.setAAD(aad(h!, index, last));
      const ct = Buffer.concat([cipher.update(body), cipher.final(), cipher.getAuthTag()]);
      const prefix = Buffer.alloc(4);
      prefix.writeUInt32BE((ct.length | (last ? LAST_BIT : 0)) >>> 0);
      lengths.push(ct.length);
      index++;
      return Buffer.concat([prefix, ct]);
    };
    let pending: Buffer | undefined;
    for await (const plain of rechunk(source, chunkSize)) {
      hash.update(plain);
      summary.size += plain.length;
      if (!h) {
        if (options.compression !== "never") {
          const sample = await deflate(plain, { level: 3 });
          summary.compressed = sample.length <= plain.length * (1 - MIN_SAVING);
        }
        h = header(chunkSize, summary.compressed);
        yield h;
      }
      if (pending) yield await sealChunk(pending, false);
      pending = plain;
    }
    if (!h) {
      h = header(chunkSize, false);
      yield h;
    }
    yield await sealChunk(pending ?? Buffer.alloc(0), true);
    const index2 = Buffer.alloc(lengths.length * 4 + INDEX_FOOTER_BYTES);
    lengths.forEach((len, i) => index2.writeUInt32BE(len, i * 4));
    const footer = lengths.length * 4;
    index2.writeUInt32BE(lengths.length, footer);
    index2.writeBigUInt64BE(BigInt(summary.size), footer + 4);
    INDEX_MAGIC.copy(index2, footer + 12);
    summary.sha256 = hash.digest("hex");
    yield index2;
  }
  return { stream: run(), summary };
}

/** Reads exactly n bytes at a time from a byte stream. */
class ByteReader {
  private buffered: Buffer[] = [];
  private held = 0;
  private done = false;
  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  /** Pulls from the source until n bytes are held or it ends. */
  private async fill(n: number): Promise<void> {
    while (this.held < n && !this.done) {
      const next = await this.it.next();
      if (next.done) this.done = true;
      else {
        const b = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value);
        this.buffered.push(b);
        this.held += b.length;
      }
    }
  }

  /** n bytes as one or more slices (no copy), or fewer only when the stream ended. */
  async readParts(n: number): Promise<Buffer[]> {
    await this.fill(n);
    const parts: Buffer[] = [];
    let want = Math.min(n, this.held);
    while (want > 0) {
      const head = this.buffered[0];
      if (head.length <= want) {
        parts.push(head);
        this.buffered.shift();
        want -= head.length;
        this.held -= head.length;
      } else {
        parts.push(head.subarray(0, want));
        this.buffered[0] = head.subarray(want);
        this.held -= want;
        want = 0;
      }
    }
    return parts;
  }

  /** n bytes, or fewer only when the stream ended. */
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    const all = this.buffered.length === 1 ? this.buffered[0] : Buffer.concat(this.buffered);
    const out = all.subarray(0, Math.min(n, all.length));
    const rest = all.subarray(out.length);
    this.buffered = rest.length ? [rest] : [];
    this.held = rest.length;
    return out;
  }

  async close() {
    await this.it.return?.();
  }
}

export interface OpenOptions {
  dataKey: Buffer;
  /** The object's header (its first 16 bytes). */
  header: Buffer;
  /** Index of the first chunk in `source`. */
  firstChunk?: number;
  /** Plaintext bytes to drop from the first chunk. */
  skip?: number;
  /** Plaintext bytes to return; undefined reads to the last chunk. */
  length?: number;
}

/**
 * Opens sealed chunks (from firstChunk on) and yields plaintext. Throws CorruptObjectError as
 * soon as a chunk fails authentication or the stream ends before the last chunk: nothing that
 * failed authentication is ever yielded.
 */
export async function* unseal(source: AsyncIterable<Uint8Array>, options: OpenOptions): AsyncIterable<Buffer> {
  const { chunkSize, compressed } = parseHeader(options.header);
  const reader = new ByteReader(source[Symbol.asyncIterator]());
  let index = options.firstChunk ?? 0;
  let skip = options.skip ?? 0;
  let remaining = options.length ?? Infinity;
  try {
    while (remaining > 0) {
      const prefix = await reader.read(4);
      if (prefix.length < 4) throw new CorruptObjectError("object is truncated");
      const word = prefix.readUInt32BE(0);
      const last = (word & LAST_BIT) !== 0;
      const len = word & ~LAST_BIT;
      if (len < TAG_BYTES || len > chunkSize + (chunkSize >> 4) + 1024 + TAG_BYTES) throw new CorruptObjectError(`chunk ${index} has a bad length`);
      // The sealed chunk as slices of what the store sent (no copy); the tag is its last 16 bytes.
      const body = await reader.readParts(len - TAG_BYTES);
      const tag = await reader.read(TAG_BYTES);
      if (tag.length < TAG_BYTES) throw new CorruptObjectError("object is truncated");
      const decipher = createDecipheriv("aes-256-gcm", options.dataKey, nonce(index));
      decipher.setAAD(aad(options.header, index, last));
      decipher.setAuthTag(tag);
      let pieces: Buffer[];
      try {
        pieces = body.map((part) => decipher.update(part));
        // Only after final() has checked the tag is any of it released.
        decipher.final();
      } catch {
        throw new CorruptObjectError(`chunk ${index} fails authentication (the object was altered)`);
      }
      if (compressed) pieces = [await inflate(pieces.length === 1 ? pieces[0] : Buffer.concat(pieces))];
      const plainLength = pieces.reduce((n, p) => n + p.length, 0);
      if (plainLength > chunkSize || (!last && plainLength !== chunkSize)) throw new CorruptObjectError(`chunk ${index} has a bad size`);
      index++;
      for (let plain of pieces) {
        if (skip > 0) {
          const drop = Math.min(skip, plain.length);
          plain = plain.subarray(drop);
          skip -= drop;
        }
        if (plain.length > remaining) plain = plain.subarray(0, remaining);
        remaining -= plain.length;
        if (plain.length > 0) yield plain;
      }
      if (last) {
        if (remaining !== Infinity && remaining > 0) throw new CorruptObjectError("object is shorter than its recorded size");
        return;
      }
    }
  } finally {
    await reader.close();
  }
}

/** Parses the index trailer (its last 16 bytes first: see indexFooter). */
export function parseIndexFooter(footer: Buffer): { chunkCount: number; size: number } {
  if (footer.length !== INDEX_FOOTER_BYTES || !footer.subarray(12).equals(INDEX_MAGIC)) throw new CorruptObjectError("bad index trailer");
  return { chunkCount: footer.readUInt32BE(0), size: Number(footer.readBigUInt64BE(4)) };
}

/** Stored byte offset of each chunk (and of the index, last) from the per-chunk lengths. */
export function chunkOffsets(index: Buffer, chunkCount: number): number[] {
  const offsets = [HEADER_BYTES];
  for (let i = 0; i < chunkCount; i++) offsets.push(offsets[i] + 4 + index.readUInt32BE(i * 4));
  return offsets;
}
