import { create, type JsonObject } from "@bufbuild/protobuf";
import {
  ExportHeaderSchema,
  type ExportHeader,
  type ImportVoiceModelRequest,
  type UploadModelFileRequest,
} from "../../gen/voicemodel/v1/model_files_pb";
import { VoiceModelFileSchema, type VoiceModel } from "../../gen/voicemodel/v1/voice_model_pb";
import { CreateVoiceModelRequestSchema, type CreateVoiceModelRequest } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { AppError, invalidArgument } from "../errors";
import type { ModelFileService, StoredFile } from "../model-files/model-file-service";
import type { Retention } from "../model-files/retention";
import type { Actor } from "../voice-models/model-events";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

type FileRpc = "createVoiceModel" | "uploadModelFile" | "readModelFile" | "exportVoiceModel" | "importVoiceModel" | "undeleteVoiceModel";

/** Usage stats of a model for its export header (from the usage room, when built in). */
export type UsageLookup = (actor: Actor, modelId: string) => Promise<JsonObject | undefined>;

export const EXPORT_FORMAT_VERSION = 1;

export const fileInfo = (file: StoredFile) => ({ ...file, sizeBytes: BigInt(file.sizeBytes), storedBytes: BigInt(file.storedBytes) });

/** The export header of a model and its file. */
export async function exportHeader(
  actor: Actor,
  files: ModelFileService,
  modelId: string,
  usageOf: UsageLookup | undefined,
): Promise<{ header: ExportHeader; model: VoiceModelRecord; file: Awaited<ReturnType<ModelFileService["fileForOwner"]>>["file"] }> {
  const { model, file } = await files.fileForOwner(actor, modelId);
  const training: JsonObject = { metadata: model.metadata as JsonObject, provider: model.provider, sampleRate: model.sampleRate };
  if (model.qualityComponents) training.qualityComponents = { ...model.qualityComponents };
  if (model.trainingJobId) training.trainingJobId = model.trainingJobId;
  const header = create(ExportHeaderSchema, {
    formatVersion: EXPORT_FORMAT_VERSION,
    model: toProto(model),
    sizeBytes: BigInt(file.sizeBytes),
    sha256: file.sha256,
    training,
    usage: usageOf ? await usageOf(actor, model.id) : undefined,
  });
  return { header, model, file };
}

/**
 * The create request an export's header stands for (a new model: ids, times and the model number
 * are not kept; the parent is, when it is one of the importer's models, see createFromBytes).
 */
export function createRequestFromHeader(header: ExportHeader, userId: string | undefined, consentId?: string): CreateVoiceModelRequest {
  const m = header.model;
  if (header.formatVersion !== EXPORT_FORMAT_VERSION) throw invalidArgument("header.formatVersion", `must be ${EXPORT_FORMAT_VERSION}`);
  if (!m) throw invalidArgument("header.model", "is required");
  // Not kept, but an export of this service never holds anything else.
  if (m.id) valid.modelId(m.id, "header.model.id");
  if (m.userId) valid.userId(m.userId, "header.model.userId");
  const parentModelId = m.parentModelId === undefined ? undefined : valid.modelId(m.parentModelId, "header.model.parentModelId");
  return create(CreateVoiceModelRequestSchema, {
    userId,
    provider: m.provider,
    modelPath: "import",
    sampleRate: m.sampleRate,
    ...(m.qualityComponents ? { qualityComponents: m.qualityComponents } : { qualityScore: m.qualityScore }),
    metadata: m.metadata,
    status: m.status,
    parentModelId,
    consentId: consentId === undefined ? undefined : valid.uuid(consentId, "consentId", "a consent id"),
  });
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** Import: checks an export's size and checksum against its header and trailer, refusing any mismatch. */
export function verifyExport(header: ExportHeader, trailer: { sha256: string; sizeBytes: bigint } | undefined) {
  return (sealed: { size: number; sha256: string }): AppError | undefined => {
    if (!trailer) return invalidArgument("trailer", "missing: the export is truncated");
    if (!SHA256_HEX.test(header.sha256)) return invalidArgument("header.sha256", "must be 64 lowercase hex digits");
    if (BigInt(sealed.size) !== header.sizeBytes || trailer.sizeBytes !== header.sizeBytes) {
      return invalidArgument("chunk", `the export holds ${sealed.size} file bytes, its header says ${header.sizeBytes}: truncated or altered`);
    }
    if (sealed.sha256 !== header.sha256 || trailer.sha256 !== header.sha256) {
      return invalidArgument("chunk", `the file bytes hash to ${sealed.sha256}, the export says ${header.sha256}: altered`);
    }
    return undefined;
  };
}

/** The most file bytes one streamed message carries. */
const MESSAGE_BYTES = 64 * 1024;

/**
 * Cuts decrypted 1 MiB chunks into 64 KiB messages (views, no copy). Each message is copied
 * twice on its way out (encoding, gRPC framing) and once more by a client: at 64 KiB those
 * copies stay in cache, and a 1 GiB export cost the server about half the CPU it did with 1 MiB
 * messages (bench/export-bench.ts).
 */
export async function* messageSized(bytes: AsyncIterable<Buffer>): AsyncIterable<Buffer> {
  for await (const chunk of bytes) {
    for (let at = 0; at < chunk.length; at += MESSAGE_BYTES) yield chunk.subarray(at, at + MESSAGE_BYTES);
  }
}

/** Reads the first message of a client stream, which must be a header. */
async function firstHeader<M extends { part: { case: string | undefined; value?: unknown } }>(
  it: AsyncIterator<M>,
): Promise<M> {
  const first = await it.next();
  if (first.done || first.value.part.case !== "header") throw invalidArgument("header", "the first message must carry the header");
  return first.value;
}

/** Thin handlers of model files: upload, read, export, import, and CreateVoiceModel's ingest. */
export function modelFileHandlers(files: ModelFileService, retention: Retention, usageOf?: UsageLookup): Pick<VoiceModelHandlers, FileRpc> {
  return {
    async undeleteVoiceModel(req, ctx) {
      return { model: toProto(await retention.undelete(ctx, req.modelId)) };
    },

    async createVoiceModel(req, ctx) {
      return { model: toProto(await files.createWithIngest(ctx, req)) };
    },

    async uploadModelFile(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await firstHeader<UploadModelFileRequest>(it);
      const header = first.part.value as { modelId: string; sha256?: string; sizeBytes?: bigint };
      const bytes = (async function* () {
        for (let next = await it.next(); !next.done; next = await it.next()) {
          if (next.value.part.case !== "chunk") throw invalidArgument("chunk", "every message after the header must carry a chunk");
          yield next.value.part.value;
        }
      })();
      const expect = { sha256: header.sha256, sizeBytes: header.sizeBytes === undefined ? undefined : Number(header.sizeBytes) };
      const { model, file } = await files.upload(ctx, header.modelId, bytes, expect);
      return { model: toProto(model), file: fileInfo(file) };
    },

    async *readModelFile(req, ctx) {
      const { file } = await files.fileForUse(ctx, req.modelId);
      const offset = req.offset === undefined ? 0 : Number(req.offset);
      if (!Number.isSafeInteger(offset) || offset < 0) throw invalidArgument("offset", "must be 0 or more");
      if (req.length !== undefined && req.length < 0n) throw invalidArgument("length", "must be 0 or more");
      const end = req.length === undefined ? file.sizeBytes - 1 : offset + Number(req.length) - 1;
      let first = true;
      const range = offset === 0 && req.length === undefined ? undefined : { start: offset, end };
      if (range && range.end < range.start) {
        yield { sizeBytes: BigInt(file.sizeBytes), sha256: file.sha256 };
        return;
      }
      for await (const chunk of messageSized(files.bytes(file, range))) {
        yield first ? { chunk, sizeBytes: BigInt(file.sizeBytes), sha256: file.sha256 } : { chunk };
        first = false;
      }
      if (first) yield { sizeBytes: BigInt(file.sizeBytes), sha256: file.sha256 };
    },

    async *exportVoiceModel(req, ctx) {
      const { header, file } = await exportHeader(ctx, files, req.modelId, usageOf);
      yield { part: { case: "header", value: header } };
      for await (const chunk of messageSized(files.bytes(file))) yield { part: { case: "chunk", value: chunk } };
      yield { part: { case: "trailer", value: { sha256: file.sha256, sizeBytes: BigInt(file.sizeBytes) } } };
    },

    async importVoiceModel(requests, ctx) {
      const it = requests[Symbol.asyncIterator]();
      const first = await firstHeader<ImportVoiceModelRequest>(it);
      const header = first.part.value as ExportHeader;
      let trailer: { sha256: string; sizeBytes: bigint } | undefined;
      const bytes = (async function* () {
        for (let next = await it.next(); !next.done; next = await it.next()) {
          const part = next.value.part;
          if (trailer) throw invalidArgument("trailer", "must be the last message");
          if (part.case === "chunk") yield part.value;
          else if (part.case === "trailer") trailer = part.value;
          else throw invalidArgument("header", "only the first message may carry the header");
        }
      })();
      const createReq = createRequestFromHeader(header, first.userId, first.consentId);
      const { model, file } = await files.createFromBytes(ctx, createReq, bytes, (sealed) => verifyExport(header, trailer)(sealed));
      return { model: toProto(model), file: fileInfo(file) };
    },
  };
}

/** GetVoiceModel with the model's file size and SHA-256 (its access already checked by the handler). */
export function withFileInfo(getVoiceModel: VoiceModelHandlers["getVoiceModel"], files: ModelFileService): VoiceModelHandlers["getVoiceModel"] {
  return async (req, ctx) => {
    const reply = await getVoiceModel(req, ctx);
    const model = reply.model as VoiceModel | undefined;
    const info = model ? await files.fileInfo(model.id) : undefined;
    // A copy: toProto's messages are shared and never mutated.
    return info && model ? { model: { ...model, file: create(VoiceModelFileSchema, { sizeBytes: BigInt(info.sizeBytes), sha256: info.sha256 }) } } : reply;
  };
}
