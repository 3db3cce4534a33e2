import type { Knex } from "knex";

// Consent records (src/consent/consent-repository.ts owns them) and the link of a model to its
// consent (voice_models.consent_id, unique: one record covers one model). A record waits for its
// model by training_job_id (one per user and job). The recording is a sealed object like model
// files; its key, hash and wrapped data key live on the row. revoked_voice_models keeps the ids of
// models deleted by a withdrawal (ids are random, not personal), so nothing brings them back.
// backup_rewrites is the durable job of a withdrawal: a backup with a row may hold a withdrawn
// model and can be neither downloaded nor restored until it is rewritten without it (or deleted);
// backup_purge_keys holds the objects rewritten backups left behind until they are deleted.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE voice_model_consents (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      user_id varchar(128) NOT NULL,
      training_job_id varchar(128),
      speaker_kind text NOT NULL CHECK (speaker_kind IN ('owner', 'other')),
      speaker_name text,
      statement_text text NOT NULL,
      statement_version text NOT NULL,
      capture_method text NOT NULL CHECK (capture_method IN ('in_app_recording', 'signed_form', 'other')),
      captured_at timestamptz(3) NOT NULL,
      recorded_by varchar(128) NOT NULL,
      samples jsonb NOT NULL DEFAULT '[]',
      recording_key text,
      recording_sha256 char(64),
      recording_size bigint,
      recording_key_id text,
      recording_wrapped_key bytea,
      created_at timestamptz(3) NOT NULL DEFAULT now(),
      CHECK ((speaker_kind = 'other') = (speaker_name IS NOT NULL)),
      CHECK ((recording_key IS NULL) = (recording_sha256 IS NULL))
    )`);
  await knex.raw(`CREATE INDEX voice_model_consents_user ON voice_model_consents (user_id, created_at DESC, id DESC)`);
  await knex.raw(`CREATE UNIQUE INDEX voice_model_consents_job ON voice_model_consents (user_id, training_job_id) WHERE training_job_id IS NOT NULL`);
  await knex.raw(`ALTER TABLE voice_models ADD COLUMN consent_id uuid REFERENCES voice_model_consents (id)`);
  await knex.raw(`CREATE UNIQUE INDEX voice_models_consent ON voice_models (consent_id) WHERE consent_id IS NOT NULL`);
  await knex.raw(`
    CREATE TABLE revoked_voice_models (
      model_id uuid PRIMARY KEY,
      revoked_at timestamptz(3) NOT NULL DEFAULT now()
    )`);
  await knex.raw(`
    CREATE TABLE backup_rewrites (
      backup_id uuid NOT NULL REFERENCES backups (id) ON DELETE CASCADE,
      model_id uuid NOT NULL,
      requested_at timestamptz(3) NOT NULL DEFAULT now(),
      PRIMARY KEY (backup_id, model_id)
    )`);
  await knex.raw(`
    CREATE TABLE backup_purge_keys (
      storage_key text PRIMARY KEY,
      created_at timestamptz(3) NOT NULL DEFAULT now()
    )`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP TABLE backup_purge_keys`);
  await knex.raw(`DROP TABLE backup_rewrites`);
  await knex.raw(`DROP TABLE revoked_voice_models`);
  await knex.raw(`ALTER TABLE voice_models DROP COLUMN consent_id`);
  await knex.raw(`DROP TABLE voice_model_consents`);
}
