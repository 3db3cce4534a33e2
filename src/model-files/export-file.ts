/*
 * The export as one binary file (GET /v1/voice-models/{id}/export, POST /v1/voice-models/import):
 *   "VMX1" | header length u32 BE | ExportHeader (protobuf binary) | file bytes | SHA-256 (32 bytes)
 * The layout is fixed by the header, so any byte range maps to a range of the model file.
 */
import { invalidArgument } from "../errors";

export const EXPORT_MAGIC = Buffer.from("VMX1");
const MAX_HEADER_BYTES = 1 << 20;

export interface ExportLayout {
  /** Magic, length and header bytes. */
  prefix: Buffer;
  fileSize: number;
  /** The trailing SHA-256, raw. */
  suffix: Buffer;
  total: number;
}

export function exportLayout(headerBytes: Uint8Array, fileSize: number, sha256Hex: string): ExportLayout {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(headerBytes.length);
  const prefix = Buffer.concat([EXPORT_MAGIC, length, headerBytes]);
  const suffix = Buffer.from(sha256Hex, "hex");
  return { prefix, fileSize, suffix, total: prefix.length + fileSize + suffix.length };
}

/**
 * Yields bytes [start, end] of the export file; fileBytes(range) supplies the plaintext of the
 * model file range it asks for.
 */
export async function* exportBytes(
  layout: ExportLayout,
  start: number,
  end: number,
  fileBytes: (range: { start: number; end: number }) => AsyncIterable<Uint8Array>,
): AsyncIterable<Uint8Array> {
  const p = layout.prefix.length;
  const f = layout.fileSize;
  if (start < p) yield layout.prefix.subarray(start, Math.min(end + 1, p));
  const fileStart = Math.max(start, p) - p;
  const fileEnd = Math.min(end, p + f - 1) - p;
  if (f > 0 && fileStart <= fileEnd) yield* fileBytes({ start: fileStart, end: fileEnd });
  const sStart = Math.max(start, p + f) - p - f;
  const sEnd = end - p - f;
  if (sEnd >= 0 && sStart <= sEnd) yield layout.suffix.subarray(sStart, sEnd + 1);
}

/** Reads exactly n bytes (or fewer at the end of the stream). */
export class StreamReader {
  private buffered: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(private readonly it: AsyncIterator<Uint8Array>) {}

  async read(n: number): Promise<Buffer> {
    const parts = [this.buffered];
    let held = this.buffered.length;
    while (held < n && !this.done) {
      const next = await this.it.next();
      if (next.done) this.done = true;
      else {
        parts.push(Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength));
        held += next.value.byteLength;
      }
    }
    const all = parts.length === 1 ? parts[0] : Buffer.concat(parts);
    this.buffered = all.subarray(Math.min(n, all.length));
    return all.subarray(0, Math.min(n, all.length));
  }

  /** Up to n bytes as they arrive, without waiting for all of them. */
  async *stream(n: number): AsyncIterable<Buffer> {
    let left = n;
    if (this.buffered.length > 0) {
      const take = this.buffered.subarray(0, Math.min(left, this.buffered.length));
      this.buffered = this.buffered.subarray(take.length);
      left -= take.length;
      if (take.length) yield take;
    }
    while (left > 0 && !this.done) {
      const next = await this.it.next();
      if (next.done) {
        this.done = true;
        break;
      }
      const b = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      const take = b.subarray(0, Math.min(left, b.length));
      this.buffered = b.subarray(take.length);
      left -= take.length;
      yield take;
    }
  }
}

/** Parses an export file's start: returns the header bytes and a reader positioned at the file bytes. */
export async function readExportStart(body: AsyncIterable<Uint8Array>): Promise<{ headerBytes: Buffer; reader: StreamReader }> {
  const reader = new StreamReader(body[Symbol.asyncIterator]());
  const start = await reader.read(8);
  if (start.length < 8 || !start.subarray(0, 4).equals(EXPORT_MAGIC)) throw invalidArgument("body", "is not a voice model export (bad magic)");
  const length = start.readUInt32BE(4);
  if (length > MAX_HEADER_BYTES) throw invalidArgument("body", "export header too large");
  const headerBytes = await reader.read(length);
  if (headerBytes.length < length) throw invalidArgument("body", "the export is truncated");
  return { headerBytes, reader };
}
