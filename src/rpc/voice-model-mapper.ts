import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { VoiceModelSchema, type VoiceModel } from "../../gen/voicemodel/v1/voice_model_pb";
import { etagOf, type VoiceModelRecord } from "../voice-models/voice-model";

const MEMO_MAX = 10_000;
const memo = new Map<string, VoiceModel>();
/** Records are never mutated, so the same record object (a cached read) maps to its message without a key. */
const byRecord = new WeakMap<VoiceModelRecord, VoiceModel>();

/**
 * A domain model as its proto message. The same content always yields the same (never mutated)
 * message object, so the gRPC transport encodes it once (see grpc-transport's reply encoder):
 * encoding a VoiceModel with its Struct and timestamps costs more than the rest of a cached read.
 */
export function toProto(model: VoiceModelRecord): VoiceModel {
  const same = byRecord.get(model);
  if (same) return same;
  const key = JSON.stringify(model);
  const hit = memo.get(key);
  if (hit) {
    byRecord.set(model, hit);
    return hit;
  }
  const message = create(VoiceModelSchema, {
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
  });
  // Map order is insertion order: dropping the first key evicts the oldest entry.
  if (memo.size >= MEMO_MAX) memo.delete(memo.keys().next().value!);
  memo.set(key, message);
  byRecord.set(model, message);
  return message;
}
