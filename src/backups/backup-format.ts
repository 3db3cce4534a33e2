import type { VoiceModelRecord } from "../voice-models/voice-model";

/*
 * The plain content of a backup: "VMB1" | manifest length u32 BE | manifest JSON | file bytes.
 * File offsets in the manifest count from the end of the manifest; each distinct file is stored once.
 */
export const BACKUP_MAGIC = Buffer.from("VMB1");
export const BACKUP_FORMAT = 1;
export const MAX_MANIFEST_BYTES = 64 << 20;

export interface ManifestFile {
  sha256: string;
  sizeBytes: number;
  offset: number;
}

export interface ManifestModel {
  id: string;
  provider: string;
  modelPath: string;
  sampleRate: number;
  qualityScore: number;
  qualityComponents: VoiceModelRecord["qualityComponents"] | null;
  metadata: Record<string, unknown>;
  isActive: boolean;
  status: string;
  trainingJobId: string | null;
  createdAt: string;
  updatedAt: string;
  deletedAt: string | null;
  /** Absent in backups made before model numbers (a restore then gives the next number). */
  modelNumber?: number;
  /** Absent in backups made before lineage; null for a model with no parent. */
  parentModelId?: string | null;
  file: ManifestFile | null;
}

export interface Manifest {
  format: number;
  userId: string;
  createdAt: string;
  models: ManifestModel[];
}

export function manifestModel(model: VoiceModelRecord, file: ManifestFile | null): ManifestModel {
  return {
    id: model.id,
    provider: model.provider,
    modelPath: model.modelPath,
    sampleRate: model.sampleRate,
    qualityScore: model.qualityScore,
    qualityComponents: model.qualityComponents ?? null,
    metadata: model.metadata,
    isActive: model.isActive,
    status: model.status,
    trainingJobId: model.trainingJobId ?? null,
    createdAt: model.createdAt.toISOString(),
    updatedAt: model.updatedAt.toISOString(),
    deletedAt: model.deletedAt?.toISOString() ?? null,
    modelNumber: model.modelNumber,
    parentModelId: model.parentModelId ?? null,
    file,
  };
}

/** The bytes before the files. */
export function manifestPrefix(manifest: Manifest): Buffer {
  const json = Buffer.from(JSON.stringify(manifest));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(json.length);
  return Buffer.concat([BACKUP_MAGIC, length, json]);
}

export class BadBackupError extends Error {
  override readonly name = "BadBackupError";
}

/** Checks a parsed manifest's shape (it was authenticated, but may come from an older format). */
export function parseManifest(json: Buffer, userId: string): Manifest {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(json.toString("utf8"));
  } catch {
    throw new BadBackupError("the backup manifest is not JSON");
  }
  if (manifest?.format !== BACKUP_FORMAT || !Array.isArray(manifest.models)) throw new BadBackupError("unknown backup format");
  if (manifest.userId !== userId) throw new BadBackupError("the backup belongs to another user");
  return manifest;
}
