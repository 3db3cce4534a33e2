import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { VoiceModelSchema, type VoiceModel } from "../../gen/voicemodel/v1/voice_model_pb";
import { etagOf, type VoiceModelRecord } from "../voice-models/voice-model";

const MEMO_MAX = 10_000;
type MemoEntry = { model: VoiceModelRecord; metadataJson: string; message: VoiceModel };
/**
 * The last message made for each model id, with the record it was made from: two generations of
 * up to MEMO_MAX / 2 ids, the older dropped whole when the newer fills. Evicting the oldest key one
 * at a time cost several microseconds per miss (a Map's first key after many deletes is slow).
 */
let recentMemo = new Map<string, MemoEntry>();
let olderMemo = new Map<string, MemoEntry>();

function remember(id: string, entry: MemoEntry) {
  if (recentMemo.size >= MEMO_MAX / 2) {
    olderMemo = recentMemo;
    recentMemo = new Map();
  }
  recentMemo.set(id, entry);
}
/** Records are never mutated, so the same record object (a cached read) maps to its message without a key. */
const byRecord = new WeakMap<VoiceModelRecord, VoiceModel>();

const sameTime = (a: Date | undefined, b: Date | undefined) => (a === undefined || b === undefined ? a === b : a.getTime() === b.getTime());

/**
 * Whether two records make the same message: every field toProto reads, compared by value (a
 * field by field check: serializing whole records as a key cost more than encoding them).
 */
function sameMessage(a: VoiceModelRecord, b: VoiceModelRecord, aMetadataJson: string, bMetadataJson: () => string): boolean {
  const ac = a.qualityComponents;
  const bc = b.qualityComponents;
  return (
    a.id === b.id &&
    a.version === b.version &&
    a.userId === b.userId &&
    a.provider === b.provider &&
    a.modelPath === b.modelPath &&
    a.sampleRate === b.sampleRate &&
    a.qualityScore === b.qualityScore &&
    a.isActive === b.isActive &&
    a.status === b.status &&
    a.trainingJobId === b.trainingJobId &&
    a.modelNumber === b.modelNumber &&
    a.parentModelId === b.parentModelId &&
    sameTime(a.createdAt, b.createdAt) &&
    sameTime(a.updatedAt, b.updatedAt) &&
    sameTime(a.deletedAt, b.deletedAt) &&
    (ac === undefined || bc === undefined
      ? ac === bc
      : ac.similarity === bc.similarity && ac.naturalness === bc.naturalness && ac.clarity === bc.clarity && ac.consistency === bc.consistency) &&
    aMetadataJson === bMetadataJson()
  );
}

/**
 * A domain model as its proto message. The same content always yields the same (never mutated)
 * message object, so the gRPC transport encodes it once (see grpc-transport's reply encoder):
 * encoding a VoiceModel with its Struct and timestamps costs more than the rest of a cached read.
 */
export function toProto(model: VoiceModelRecord): VoiceModel {
  const same = byRecord.get(model);
  if (same) return same;
  let metadataJson: string | undefined;
  const metadataOf = () => (metadataJson ??= JSON.stringify(model.metadata));
  const recent = recentMemo.get(model.id);
  const hit = recent ?? olderMemo.get(model.id);
  if (hit && sameMessage(hit.model, model, hit.metadataJson, metadataOf)) {
    if (!recent) remember(model.id, hit);
    byRecord.set(model, hit.message);
    return hit.message;
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
    modelNumber: model.modelNumber,
    parentModelId: model.parentModelId,
  });
  remember(model.id, { model, metadataJson: metadataOf(), message });
  byRecord.set(model, message);
  return message;
}
