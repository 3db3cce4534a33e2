import { Model } from "objection";

/** The voice_models table, column for column. Only voice-models/repository.ts uses it; the domain sees VoiceModelRecord. */
export class VoiceModelRow extends Model {
  static override tableName = "voice_models";
  static override jsonAttributes = ["metadata"];

  id!: string;
  user_id!: string;
  provider!: string;
  model_path!: string;
  sample_rate!: number;
  quality_score!: number;
  similarity!: number | null;
  naturalness!: number | null;
  clarity!: number | null;
  consistency!: number | null;
  metadata!: Record<string, unknown>;
  is_active!: boolean;
  status!: string;
  training_job_id!: string | null;
  version!: number;
  size_bytes!: number | null;
  /** The stored file (model_files), once the service holds the model's file. */
  file_id!: string | null;
  /** Per user, from 1, never reused (numbered by the database on insert; see migration 006). */
  model_number!: number;
  /** The model this one was trained from (same user); null once that one is purged. */
  parent_model_id!: string | null;
  /** The consent record covering the model (voice_model_consents), when one was recorded. */
  consent_id!: string | null;
  created_at!: Date;
  updated_at!: Date;
  deleted_at!: Date | null;
}

export class ModelOwnerRow extends Model {
  static override tableName = "model_owners";
  static override idColumn = "user_id";

  user_id!: string;
  /** The last model_number given to one of the user's models. */
  last_model_number!: number;
  created_at!: Date;
}
