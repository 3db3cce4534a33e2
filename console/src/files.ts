// Model files and backups through the generated client only: uploads in chunks (unary calls,
// since browsers cannot stream a request over HTTP/1.1), downloads assembled from server streams.
import { toBinary } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { ExportHeaderSchema, type ExportHeader } from "../../gen/voicemodel/v1/model_files_pb";
import { api } from "./api";
import { el } from "./dom";

/** Called with the bytes done and the bytes in all. */
export type Progress = (done: number, total: number) => void;

export async function sha256Hex(bytes: BufferSource): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Blob parts must be backed by an ArrayBuffer; chunks from the client may view any buffer.
const part = (bytes: Uint8Array): Uint8Array<ArrayBuffer> => (bytes.buffer instanceof ArrayBuffer ? (bytes as Uint8Array<ArrayBuffer>) : new Uint8Array(bytes));

/** Appends that fail in a row before the upload gives up. */
const MAX_ATTEMPTS = 5;

/** Where the server says an upload stands, from a refused append. */
function receivedFrom(error: unknown): number | undefined {
  if (!(error instanceof ConnectError)) return undefined;
  const info = error.findDetails(ErrorInfoSchema)[0];
  if (info?.reason !== "UPLOAD_OFFSET_MISMATCH") return undefined;
  const received = Number(info.metadata.receivedBytes);
  return Number.isSafeInteger(received) ? received : undefined;
}

/**
 * Uploads a file: Start (which resumes an open session for the same file), one Append per
 * chunk, Finish. A failed append is retried from the bytes the server has received (a lost
 * reply re-sends a chunk, which the server answers as received); progress moves per
 * acknowledged chunk.
 */
export async function uploadModelFile(modelId: string, file: Blob, onProgress: Progress): Promise<{ sha256: string; sizeBytes: number }> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const sha256 = await sha256Hex(bytes);
  const session = await api.startModelFileUpload({ modelId, sizeBytes: BigInt(bytes.length), sha256 });
  let received = Number(session.receivedBytes);
  onProgress(received, bytes.length);
  let failures = 0;
  while (received < bytes.length) {
    const data = bytes.subarray(received, received + session.chunkBytes);
    try {
      const reply = await api.appendModelFileUpload({ uploadId: session.uploadId, offset: BigInt(received), data });
      received = Number(reply.receivedBytes);
      failures = 0;
    } catch (error) {
      if (++failures >= MAX_ATTEMPTS) throw error;
      // The server names where it stands when the offset was wrong; otherwise send the same again.
      received = receivedFrom(error) ?? received;
      await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** failures));
    }
    onProgress(received, bytes.length);
  }
  await api.finishModelFileUpload({ uploadId: session.uploadId });
  return { sha256, sizeBytes: bytes.length };
}

const hexBytes = (hex: string) => Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

/**
 * ExportVoiceModel assembled as the export file ("VMX1", header length, header, file bytes,
 * SHA-256; what POST /v1/voice-models/import takes), its checksum verified.
 */
export async function downloadExport(modelId: string, onProgress: Progress): Promise<void> {
  let header: ExportHeader | undefined;
  let trailerSha: string | undefined;
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let done = 0;
  for await (const reply of api.exportVoiceModel({ modelId })) {
    const p = reply.part;
    if (p.case === "header") header = p.value;
    else if (p.case === "chunk") {
      chunks.push(part(p.value));
      done += p.value.length;
      onProgress(done, Number(header?.sizeBytes ?? 0));
    } else if (p.case === "trailer") trailerSha = p.value.sha256;
  }
  if (!header || !trailerSha) throw new Error("the export ended early; try again");
  const fileBytes = new Blob(chunks);
  const actual = await sha256Hex(await fileBytes.arrayBuffer());
  if (actual !== header.sha256 || actual !== trailerSha) throw new Error(`the export's bytes hash to ${actual}, not ${header.sha256}; try again`);
  const headerBytes = toBinary(ExportHeaderSchema, header);
  const prefix = new Uint8Array(8);
  prefix.set([0x56, 0x4d, 0x58, 0x31]); // "VMX1"
  new DataView(prefix.buffer).setUint32(4, headerBytes.length);
  save(new Blob([prefix, part(headerBytes), fileBytes, hexBytes(actual)], { type: "application/vnd.voicemodel.export" }), `voice-model-${modelId}.vmx`);
}

/** ReadBackup assembled into the backup file, its checksum verified. */
export async function downloadBackup(backupId: string, onProgress: Progress): Promise<void> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  let expected = "";
  let done = 0;
  for await (const reply of api.readBackup({ backupId })) {
    if (reply.sha256) [size, expected] = [Number(reply.sizeBytes), reply.sha256];
    chunks.push(part(reply.chunk));
    done += reply.chunk.length;
    onProgress(done, size);
  }
  const blob = new Blob(chunks, { type: "application/vnd.voicemodel.backup" });
  const actual = await sha256Hex(await blob.arrayBuffer());
  if (blob.size !== size || actual !== expected) throw new Error(`the backup's bytes hash to ${actual}, not ${expected}; try again`);
  save(blob, `voice-models-backup-${backupId}.vmb`);
}

/** Hands a blob to the browser as a download. */
function save(blob: Blob, name: string): void {
  const href = URL.createObjectURL(blob);
  const a = el("a", { href, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
