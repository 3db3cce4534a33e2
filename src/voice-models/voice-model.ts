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
  /** The model's number among its owner's models (1, 2, 3, ... in creation order, never reused). */
  modelNumber: number;
  /** The model it was trained from (the same user's), until that one is purged. */
  parentModelId: string | undefined;
  /** The consent record covering the model, when one was recorded (CONSENT_REQUIRED needs it). */
  consentId: string | undefined;
  createdAt: Date;
  updatedAt: Date;
  deletedAt: Date | undefined;
}

export const etagOf = (model: Pick<VoiceModelRecord, "version">) => `v${model.version}`;

/** A record back from its JSON form (cache rows, change events), where dates travel as ISO strings. */
export function reviveModel(json: Record<string, unknown>): VoiceModelRecord {
  const m = json as unknown as VoiceModelRecord;
  return {
    ...m,
    createdAt: new Date(json.createdAt as string),
    updatedAt: new Date(json.updatedAt as string),
    deletedAt: json.deletedAt ? new Date(json.deletedAt as string) : undefined,
  };
}
