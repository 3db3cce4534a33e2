import { create, fromBinary, toBinary, toJson, type JsonValue } from "@bufbuild/protobuf";
import {
  ExportHeaderSchema,
  ImportVoiceModelResponseSchema,
  UploadModelFileHeaderSchema,
  UploadModelFileResponseSchema,
} from "../../gen/voicemodel/v1/model_files_pb";
import type { BackupService } from "../backups/backup-service";
import { invalidArgument } from "../errors";
import { exportBytes, exportLayout, readExportStart } from "../model-files/export-file";
import type { ModelFileService } from "../model-files/model-file-service";
import { exportHeader, type UsageLookup } from "./model-file-handlers";
import type { RequestContext } from "./service-handlers";
import type { VoiceModelHandlers } from "./voice-model-handlers";

/** A file a download route serves; the transport adds Range, If-Range, HEAD and streaming. */
export interface Representation {
  sizeBytes: number;
  /** Strong validator: a resume with If-Range never mixes versions. */
  etag: string;
  contentType: string;
  /** Offered as the download's file name (Content-Disposition), when there is one. */
  filename?: string;
  /** The bytes from start to end, inclusive. */
  bytes(start: number, end: number): AsyncIterable<Uint8Array>;
}

/** What an upload route was told about its body, from its headers. */
export interface DeclaredBody {
  sha256?: string;
  sizeBytes?: bigint;
}

/**
 * The handlers of the plain HTTP file routes, where Connect JSON would base64 the bytes. Uploads
 * and imports go through the served (guarded) RPC handlers, so rate limits, metrics and refusal
 * audit apply exactly as over gRPC and Connect; downloads are guarded by the transport under the
 * name of the RPC they mirror.
 */
export interface FileRouteHandlers {
  readModelFile(ctx: RequestContext, modelId: string): Promise<Representation>;
  exportVoiceModel(ctx: RequestContext, modelId: string): Promise<Representation>;
  downloadBackup(ctx: RequestContext, backupId: string): Promise<Representation>;
  uploadModelFile(ctx: RequestContext, modelId: string, body: AsyncIterable<Uint8Array>, declared: DeclaredBody): Promise<JsonValue>;
  importVoiceModel(ctx: RequestContext, body: AsyncIterable<Uint8Array>, userId: string | undefined): Promise<JsonValue>;
}

export interface FileRouteDeps {
  files: ModelFileService;
  backups: BackupService;
  usageOf?: UsageLookup;
  rpc: Pick<VoiceModelHandlers, "uploadModelFile" | "importVoiceModel">;
}

export function fileRouteHandlers(deps: FileRouteDeps): FileRouteHandlers {
  const { files, backups } = deps;
  return {
    async readModelFile(ctx, modelId) {
      const { file } = await files.fileForUse(ctx, modelId);
      return {
        sizeBytes: file.sizeBytes,
        etag: `"${file.sha256}"`,
        contentType: "application/octet-stream",
        bytes: (start, end) => files.bytes(file, start === 0 && end === file.sizeBytes - 1 ? undefined : { start, end }),
      };
    },

    async exportVoiceModel(ctx, modelId) {
      const { header, model, file } = await exportHeader(ctx, files, modelId, deps.usageOf);
      const layout = exportLayout(toBinary(ExportHeaderSchema, header), file.sizeBytes, file.sha256);
      return {
        sizeBytes: layout.total,
        // Changes with the model (version) and its bytes.
        etag: `"${file.sha256.slice(0, 32)}-v${model.version}-${layout.total}"`,
        contentType: "application/vnd.voicemodel.export",
        filename: `voice-model-${model.id}.vmx`,
        bytes: (start, end) =>
          exportBytes(layout, start, end, (range) => files.bytes(file, range.start === 0 && range.end === file.sizeBytes - 1 ? undefined : range)),
      };
    },

    async downloadBackup(ctx, backupId) {
      const backup = await backups.get(ctx, backupId);
      return {
        sizeBytes: backup.sizeBytes,
        etag: `"${backup.sha256}"`,
        contentType: "application/vnd.voicemodel.backup",
        filename: `voice-models-backup-${backup.id}.vmb`,
        bytes: (start, end) => backups.bytes(backup, start === 0 && end === backup.sizeBytes - 1 ? undefined : { start, end }),
      };
    },

    async uploadModelFile(ctx, modelId, body, declared) {
      const messages = (async function* () {
        yield { part: { case: "header" as const, value: create(UploadModelFileHeaderSchema, { modelId, ...declared }) } };
        for await (const chunk of body) yield { part: { case: "chunk" as const, value: chunk } };
      })();
      const reply = await deps.rpc.uploadModelFile(messages as never, ctx);
      return toJson(UploadModelFileResponseSchema, create(UploadModelFileResponseSchema, reply));
    },

    async importVoiceModel(ctx, body, userId) {
      const { headerBytes, reader } = await readExportStart(body);
      let header;
      try {
        header = fromBinary(ExportHeaderSchema, headerBytes);
      } catch {
        throw invalidArgument("body", "the export header does not decode");
      }
      const size = Number(header.sizeBytes);
      // The file as ImportVoiceModel messages: header, chunks, and the trailer only when the body
      // ends with exactly the 32-byte checksum (else the handler refuses it as truncated).
      const messages = (async function* () {
        yield { userId, part: { case: "header" as const, value: header } };
        let received = 0;
        for await (const chunk of reader.stream(size)) {
          received += chunk.length;
          yield { part: { case: "chunk" as const, value: chunk } };
        }
        const sha = await reader.read(32);
        const extra = await reader.read(1);
        if (sha.length === 32 && extra.length === 0 && received === size) {
          yield { part: { case: "trailer" as const, value: { sha256: sha.toString("hex"), sizeBytes: BigInt(received) } } };
        }
      })();
      const reply = await deps.rpc.importVoiceModel(messages as never, ctx);
      return toJson(ImportVoiceModelResponseSchema, create(ImportVoiceModelResponseSchema, reply));
    },
  };
}
