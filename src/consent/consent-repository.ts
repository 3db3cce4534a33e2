import type { Db, Tx } from "../db/transaction";
import { invalidArgument } from "../errors";
import type { SealedObject, SealedRef } from "../storage/sealed-store";
import * as modelRepo from "../voice-models/repository";

/**
 * The one owner of voice_model_consents (see migration 009). Which model a record covers lives on
 * the model row (voice_models.consent_id), read and written through the voice-models repository.
 */

export const SPEAKER_KINDS = ["owner", "other"] as const;
export type SpeakerKind = (typeof SPEAKER_KINDS)[number];
export const CAPTURE_METHODS = ["in_app_recording", "signed_form", "other"] as const;
export type CaptureMethod = (typeof CAPTURE_METHODS)[number];

export interface TrainingSampleRef {
  ref: string;
  sha256: string;
}

export interface ConsentRecording extends SealedRef {
  sha256: string;
  sizeBytes: number;
}

/** A consent record as the domain sees it. */
export interface ConsentRecord {
  id: string;
  userId: string;
  trainingJobId: string | undefined;
  speakerKind: SpeakerKind;
  speakerName: string | undefined;
  statementText: string;
  statementVersion: string;
  captureMethod: CaptureMethod;
  capturedAt: Date;
  recordedBy: string;
  samples: TrainingSampleRef[];
  recording: ConsentRecording | undefined;
  createdAt: Date;
}

export type NewConsent = Omit<ConsentRecord, "id" | "recording" | "createdAt">;

interface ConsentRow {
  id: string;
  user_id: string;
  training_job_id: string | null;
  speaker_kind: SpeakerKind;
  speaker_name: string | null;
  statement_text: string;
  statement_version: string;
  capture_method: CaptureMethod;
  captured_at: Date;
  recorded_by: string;
  samples: TrainingSampleRef[];
  recording_key: string | null;
  recording_sha256: string | null;
  recording_size: number | string | null;
  recording_key_id: string | null;
  recording_wrapped_key: Uint8Array | null;
  created_at: Date;
}

const TABLE = "voice_model_consents";

/** The one place a row becomes a record. */
function toRecord(row: ConsentRow): ConsentRecord {
  return {
    id: row.id,
    userId: row.user_id,
    trainingJobId: row.training_job_id ?? undefined,
    speakerKind: row.speaker_kind,
    speakerName: row.speaker_name ?? undefined,
    statementText: row.statement_text,
    statementVersion: row.statement_version,
    captureMethod: row.capture_method,
    capturedAt: row.captured_at,
    recordedBy: row.recorded_by,
    samples: row.samples ?? [],
    recording:
      row.recording_key && row.recording_sha256 && row.recording_key_id && row.recording_wrapped_key
        ? {
            key: row.recording_key,
            keyId: row.recording_key_id,
            wrapped: Buffer.from(row.recording_wrapped_key),
            sha256: row.recording_sha256,
            sizeBytes: Number(row.recording_size),
          }
        : undefined,
    createdAt: row.created_at,
  };
}

export async function insertConsent(trx: Tx, consent: NewConsent): Promise<ConsentRecord> {
  const [row] = await trx<ConsentRow>(TABLE)
    .insert({
      user_id: consent.userId,
      training_job_id: consent.trainingJobId ?? null,
      speaker_kind: consent.speakerKind,
      speaker_name: consent.speakerName ?? null,
      statement_text: consent.statementText,
      statement_version: consent.statementVersion,
      capture_method: consent.captureMethod,
      captured_at: consent.capturedAt,
      recorded_by: consent.recordedBy,
      samples: JSON.stringify(consent.samples) as unknown as TrainingSampleRef[],
    })
    .returning("*");
  return toRecord(row as ConsentRow);
}

export async function findConsent(db: Db, id: string, options: { forUpdate?: boolean } = {}): Promise<ConsentRecord | undefined> {
  const query = db<ConsentRow>(TABLE).where({ id });
  if (options.forUpdate) query.forUpdate();
  const row = await query.first();
  return row ? toRecord(row as ConsentRow) : undefined;
}

export async function findByTrainingJob(db: Db, userId: string, trainingJobId: string): Promise<ConsentRecord | undefined> {
  const row = await db<ConsentRow>(TABLE).where({ user_id: userId, training_job_id: trainingJobId }).first();
  return row ? toRecord(row as ConsentRow) : undefined;
}

/** A user's records, newest first, after a (created_at, id) position. */
export async function listConsents(db: Db, userId: string, limit: number, after?: { createdAtMs: number; id: string }): Promise<ConsentRecord[]> {
  const query = db<ConsentRow>(TABLE).where({ user_id: userId });
  if (after) query.whereRaw("(created_at, id) < (?::timestamptz, ?::uuid)", [new Date(after.createdAtMs).toISOString(), after.id]);
  const rows = await query.orderBy([{ column: "created_at", order: "desc" }, { column: "id", order: "desc" }]).limit(limit);
  return rows.map((r) => toRecord(r as ConsentRow));
}

export async function setRecording(trx: Tx, id: string, sealed: SealedObject): Promise<ConsentRecord> {
  const [row] = await trx<ConsentRow>(TABLE)
    .where({ id })
    .update({
      recording_key: sealed.key,
      recording_sha256: sealed.sha256,
      recording_size: sealed.size,
      recording_key_id: sealed.keyId,
      recording_wrapped_key: sealed.wrapped,
    })
    .returning("*");
  return toRecord(row as ConsentRow);
}

export async function deleteConsent(trx: Tx, id: string): Promise<void> {
  await trx(TABLE).where({ id }).delete();
}

/** Whether a stored object is a consent recording (the orphan sweep keeps these). */
export async function isRecordingKey(db: Db, key: string): Promise<boolean> {
  return (await db(TABLE).where({ recording_key: key }).first("id")) !== undefined;
}

/** Every recording key of a user (erasure deletes them with the user's other objects). */
export async function recordingKeysOfUser(db: Db, userId: string): Promise<string[]> {
  return (await db(TABLE).where({ user_id: userId }).whereNotNull("recording_key").pluck("recording_key")) as string[];
}

/**
 * CreateVoiceModel's consent (VoiceModelService's ConsentForNewModel), in the create's
 * transaction: the named record when it is the user's and covers no model yet, else the record
 * waiting for the training job, else none.
 */
export async function consentForNewModel(trx: Tx, userId: string, ask: { consentId?: string; trainingJobId?: string }): Promise<string | undefined> {
  if (ask.consentId) {
    const consent = await trx<ConsentRow>(TABLE).where({ id: ask.consentId, user_id: userId }).forUpdate().first();
    if (!consent) throw invalidArgument("consentId", `${ask.consentId} is not a consent record of user ${userId}`);
    const covered = await modelRepo.findModelByConsent(trx, ask.consentId);
    if (covered) throw invalidArgument("consentId", `consent ${ask.consentId} already covers voice model ${covered.id}`);
    if (consent.training_job_id && ask.trainingJobId && consent.training_job_id !== ask.trainingJobId) {
      throw invalidArgument("consentId", `consent ${ask.consentId} was given for another training job`);
    }
    return ask.consentId;
  }
  if (!ask.trainingJobId) return undefined;
  const waiting = await trx<ConsentRow>(TABLE).where({ user_id: userId, training_job_id: ask.trainingJobId }).forUpdate().first();
  if (!waiting || (await modelRepo.findModelByConsent(trx, waiting.id))) return undefined;
  return waiting.id;
}
