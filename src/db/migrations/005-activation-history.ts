import type { Knex } from "knex";

// One row per change of a user's active model (src/voice-models/activation-history.ts owns it).
// Model ids are plain columns, not foreign keys: an entry outlives the purge of its models (a
// rollback to a purged model says so). seq orders a user's entries (several may share one
// transaction's created_at); the index serves newest-first keyset pages per user. Existing users
// get one "migrated" entry for their active model, so a rollback has a start to go back to.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE activation_history (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      seq bigserial NOT NULL UNIQUE,
      user_id varchar(128) NOT NULL,
      previous_model_id uuid,
      new_model_id uuid,
      reason text NOT NULL CHECK (reason IN ('first_model', 'high_quality', 'activated', 'deactivated', 'selected',
        'model_deleted', 'model_not_completed', 'restored', 'rollback', 'account_deleted', 'migrated')),
      actor_id varchar(128) NOT NULL,
      request_id text NOT NULL DEFAULT '',
      undone_entry_id uuid REFERENCES activation_history (id),
      created_at timestamptz(3) NOT NULL DEFAULT now(),
      CHECK (previous_model_id IS DISTINCT FROM new_model_id)
    )`);
  await knex.raw(`CREATE INDEX activation_history_user ON activation_history (user_id, seq DESC)`);
  await knex.raw(`
    INSERT INTO activation_history (user_id, previous_model_id, new_model_id, reason, actor_id, request_id)
    SELECT user_id, NULL, id, 'migrated', 'migration', '' FROM voice_models
    WHERE is_active AND deleted_at IS NULL ORDER BY user_id`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP TABLE activation_history`);
}
