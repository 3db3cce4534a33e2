import type { Knex } from "knex";

// Sharing, audit log, rate-limit counters, the cleanup job's lease and run history, and the
// fleet-wide metric samples the alerts read. Timestamps have millisecond precision like the rest.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE model_shares (
      model_id uuid NOT NULL REFERENCES voice_models (id),
      owner_id varchar(128) NOT NULL,
      target_user_id varchar(128) NOT NULL,
      permission text NOT NULL CHECK (permission IN ('view', 'use')),
      created_at timestamptz(3) NOT NULL DEFAULT now(),
      PRIMARY KEY (model_id, target_user_id)
    )`);
  await knex.raw(`CREATE INDEX model_shares_target ON model_shares (target_user_id, created_at DESC, model_id DESC)`);

  // actor_id and target_user_id are plain columns so that erasing a user (DeleteUserData) can
  // replace them with a hash of the id in place.
  await knex.raw(`
    CREATE TABLE audit_events (
      id bigserial PRIMARY KEY,
      at timestamptz(3) NOT NULL DEFAULT now(),
      actor_id varchar(128),
      actor_roles text NOT NULL DEFAULT '',
      action text NOT NULL,
      target_user_id varchar(128),
      model_id uuid,
      result_code text NOT NULL DEFAULT 'OK',
      request_id text,
      client_address text,
      count integer NOT NULL DEFAULT 1,
      details jsonb NOT NULL DEFAULT '{}',
      -- Set on aggregated events (unauthenticated refusals per client address per minute).
      aggregate_key text UNIQUE
    )`);
  await knex.raw(`CREATE INDEX audit_events_at ON audit_events (at DESC, id DESC)`);
  await knex.raw(`CREATE INDEX audit_events_target ON audit_events (target_user_id, at DESC, id DESC)`);
  await knex.raw(`CREATE INDEX audit_events_actor ON audit_events (actor_id, at DESC, id DESC)`);
  await knex.raw(`CREATE INDEX audit_events_model ON audit_events (model_id) WHERE model_id IS NOT NULL`);

  // One row per counted call; the sliding window counts rows newer than now() - window.
  await knex.raw(`
    CREATE TABLE rate_limit_hits (
      id bigserial PRIMARY KEY,
      user_id varchar(128) NOT NULL,
      operation text NOT NULL,
      at timestamptz(3) NOT NULL DEFAULT clock_timestamp()
    )`);
  await knex.raw(`CREATE INDEX rate_limit_hits_key ON rate_limit_hits (user_id, operation, at)`);

  // Leases of singleton jobs: the holder renews before expires_at; a dead holder's lease lapses.
  await knex.raw(`
    CREATE TABLE job_leases (
      name text PRIMARY KEY,
      holder text,
      expires_at timestamptz(3) NOT NULL DEFAULT '-infinity'
    )`);
  await knex.raw(`INSERT INTO job_leases (name) VALUES ('cleanup')`);

  await knex.raw(`
    CREATE TABLE cleanup_runs (
      id bigserial PRIMARY KEY,
      trigger text NOT NULL,
      holder text NOT NULL,
      status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
      eligible integer NOT NULL DEFAULT 0,
      cleaned integer NOT NULL DEFAULT 0,
      batches integer NOT NULL DEFAULT 0,
      error text,
      started_at timestamptz(3) NOT NULL DEFAULT clock_timestamp(),
      finished_at timestamptz(3)
    )`);
  await knex.raw(`CREATE INDEX cleanup_runs_started ON cleanup_runs (started_at DESC)`);

  // Counter increments each instance flushes per minute, so alerts see the whole fleet.
  await knex.raw(`
    CREATE TABLE metric_samples (
      bucket timestamptz(0) NOT NULL,
      name text NOT NULL,
      labels text NOT NULL DEFAULT '',
      value double precision NOT NULL DEFAULT 0,
      PRIMARY KEY (bucket, name, labels)
    )`);
}

export async function down(knex: Knex): Promise<void> {
  for (const table of ["metric_samples", "cleanup_runs", "job_leases", "rate_limit_hits", "audit_events", "model_shares"]) {
    await knex.schema.dropTable(table);
  }
}
