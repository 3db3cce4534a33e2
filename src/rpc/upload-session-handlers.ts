import type { ChunkedUploads } from "../model-files/chunked-upload";
import { fileInfo } from "./model-file-handlers";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

type UploadSessionRpc = "startModelFileUpload" | "appendModelFileUpload" | "finishModelFileUpload";

/** Thin handlers of the resumable upload in unary calls (for browsers: no client streams there). */
export function uploadSessionHandlers(uploads: ChunkedUploads): Pick<VoiceModelHandlers, UploadSessionRpc> {
  return {
    async startModelFileUpload(req, ctx) {
      const session = await uploads.start(ctx, req);
      return { uploadId: session.id, chunkBytes: session.chunkBytes, receivedBytes: BigInt(session.receivedBytes) };
    },
    async appendModelFileUpload(req, ctx) {
      return { receivedBytes: BigInt(await uploads.append(ctx, req)) };
    },
    async finishModelFileUpload(req, ctx) {
      const { model, file } = await uploads.finish(ctx, req.uploadId);
      return { model: toProto(model), file: fileInfo(file) };
    },
  };
}
