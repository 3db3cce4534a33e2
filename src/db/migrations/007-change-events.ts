import type { Knex } from "knex";

// The change-event outbox of WatchVoiceModelEvents. Rows are written in the transaction of the
// change they describe, under a transaction-level advisory lock taken just before the insert and
// held to commit, so ids are handed out in commit order (see src/events/event-outbox.ts). Rows are
// append-only except for erasure, which replaces user ids with their hash and drops payloads.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE voice_model_events (
      id bigserial PRIMARY KEY,
      at timestamptz(3) NOT NULL DEFAULT clock_timestamp(),
      type text NOT NULL CHECK (type IN ('created', 'updated', 'status_changed', 'activated', 'deactivated', 'deleted',
        'undeleted', 'restored', 'purged', 'shared', 'share_revoked', 'file_stored', 'erased')),
      user_id varchar(128) NOT NULL,
      model_id uuid,
      -- The model as the change left it (absent where the event carries no state).
      model jsonb,
      -- Users besides the owner the event is for: the targets of a share granted or ended.
      audience varchar(128)[] NOT NULL DEFAULT '{}'
    )`);
  await knex.raw(`CREATE INDEX voice_model_events_user ON voice_model_events (user_id, id)`);
  await knex.raw(`CREATE INDEX voice_model_events_model ON voice_model_events (model_id, id) WHERE model_id IS NOT NULL`);
  await knex.raw(`CREATE INDEX voice_model_events_audience ON voice_model_events USING gin (audience)`);
  await knex.raw(`CREATE INDEX voice_model_events_at ON voice_model_events (at)`);
  // The highest id the retention job has deleted: resuming at or below it may have lost events.
  await knex.raw(`
    CREATE TABLE voice_model_event_retention (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      pruned_through_id bigint NOT NULL DEFAULT 0
    )`);
  await knex.raw(`INSERT INTO voice_model_event_retention DEFAULT VALUES`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("voice_model_event_retention");
  await knex.schema.dropTable("voice_model_events");
}
