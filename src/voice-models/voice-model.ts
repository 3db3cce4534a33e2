import type { VoiceModelRow } from "../db/models/voice-model-row";
import type { Provider, Status } from "./constants";

export interface QualityComponents {
  similarity: number;
  naturalness: number;
  clarity: number;
  consistency: number;
}

/** A voice model as the domain sees it. */
export interface VoiceModelRecord {
  id: string;
  userId: string;
  provider: Provider;
  modelPath: string;
  sampleRate: number;
  qualityScore: number;
  qualityComponents: QualityComponents | undefined;
  metadata: Record<string, unknown>;
  isActive: boolean;
  status: Status;
  trainingJobId: string | undefined;
  /** Bumped by every change; the etag clients send back. */
  version: number;
  sizeBytes: number | undefined;
  /** The service stores the model's file: modelPath is then its own key, not the caller's. */
  hasFile: boolean;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | undefined;
}

export const etagOf = (model: Pick<VoiceModelRecord, "version">) => `v${model.version}`;

/** The one place a row becomes a domain object. */
export function toRecord(row: VoiceModelRow): VoiceModelRecord {
  const hasComponents = row.similarity !== null && row.similarity !== undefined;
  return {
    id: row.id,
    userId: row.user_id,
    provider: row.provider as Provider,
    modelPath: row.model_path,
    sampleRate: row.sample_rate,
    qualityScore: Number(row.quality_score),
    qualityComponents: hasComponents
      ? {
          similarity: Number(row.similarity),
          naturalness: Number(row.naturalness),
          clarity: Number(row.clarity),
          consistency: Number(row.consistency),
        }
      : undefined,
    metadata: row.metadata ?? {},
    isActive: row.is_active,
    status: row.status as Status,
    trainingJobId: row.training_job_id ?? undefined,
    version: row.version,
    sizeBytes: row.size_bytes ?? undefined,
    hasFile: row.file_id !== null && row.file_id !== undefined,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    deletedAt: row.deleted_at ?? undefined,
  };
}
