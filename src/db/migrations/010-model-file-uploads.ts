import type { Knex } from "knex";

// Resumable uploads in unary calls (src/model-files/upload-session-repository.ts owns both
// tables). A session lives here rather than in an instance's memory because any instance may get
// any of its calls. Its bytes are staged as sealed objects, one per appended chunk, under
// {user_id}/uploads/{upload_id}/, each with its own wrapped data key on its chunk row. A session
// goes with its model (ON DELETE CASCADE: purge, erasure, withdrawal); the staged objects are
// deleted by those paths or, failing that, by the orphan sweep once no chunk row names them.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE model_file_uploads (
      id uuid PRIMARY KEY,
      model_id uuid NOT NULL REFERENCES voice_models (id) ON DELETE CASCADE,
      user_id varchar(128) NOT NULL,
      started_by varchar(128) NOT NULL,
      size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
      sha256 char(64) NOT NULL,
      chunk_bytes integer NOT NULL CHECK (chunk_bytes > 0),
      received_bytes bigint NOT NULL DEFAULT 0,
      created_at timestamptz(3) NOT NULL DEFAULT now(),
      updated_at timestamptz(3) NOT NULL DEFAULT now(),
      CHECK (received_bytes >= 0 AND received_bytes <= size_bytes)
    )`);
  await knex.raw(`CREATE INDEX model_file_uploads_model ON model_file_uploads (model_id)`);
  await knex.raw(`CREATE INDEX model_file_uploads_updated ON model_file_uploads (updated_at)`);
  await knex.raw(`
    CREATE TABLE model_file_upload_chunks (
      id uuid PRIMARY KEY,
      upload_id uuid NOT NULL REFERENCES model_file_uploads (id) ON DELETE CASCADE,
      offset_bytes bigint NOT NULL CHECK (offset_bytes >= 0),
      size_bytes integer NOT NULL CHECK (size_bytes > 0),
      sha256 char(64) NOT NULL,
      storage_key text NOT NULL UNIQUE,
      stored_bytes bigint NOT NULL,
      key_id text NOT NULL,
      wrapped_key bytea NOT NULL,
      UNIQUE (upload_id, offset_bytes)
    )`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP TABLE model_file_upload_chunks`);
  await knex.raw(`DROP TABLE model_file_uploads`);
}
