import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { VoiceModelSchema } from "../../gen/voicemodel/v1/voice_model_pb";
import { etagOf, type VoiceModelRecord } from "../voice-models/voice-model";

/** A domain model as its proto message. */
export function toProto(model: VoiceModelRecord): MessageInitShape<typeof VoiceModelSchema> {
  return {
    id: model.id,
    userId: model.userId,
    provider: model.provider,
    modelPath: model.modelPath,
    sampleRate: model.sampleRate,
    qualityScore: model.qualityScore,
    metadata: model.metadata as never,
    isActive: model.isActive,
    status: model.status,
    createdAt: timestampFromDate(model.createdAt),
    updatedAt: timestampFromDate(model.updatedAt),
    deletedAt: model.deletedAt ? timestampFromDate(model.deletedAt) : undefined,
    qualityComponents: model.qualityComponents,
    trainingJobId: model.trainingJobId,
    etag: etagOf(model),
  };
}
