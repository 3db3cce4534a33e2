import type { Knex } from "knex";

export async function up(knex: Knex): Promise<void> {
  // One row per user who owns models: the row the activation rules lock (SELECT ... FOR UPDATE),
  // so concurrent writes for one user serialize even before the user has any model.
  await knex.schema.createTable("model_owners", (t) => {
    t.string("user_id", 128).primary();
    t.timestamp("created_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
  });

  await knex.schema.createTable("voice_models", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    t.string("user_id", 128).notNullable().references("user_id").inTable("model_owners");
    t.text("provider").notNullable();
    t.string("model_path", 1024).notNullable();
    t.integer("sample_rate").notNullable().defaultTo(22050);
    t.decimal("quality_score", 4, 3).notNullable().defaultTo(0);
    t.decimal("similarity", 4, 3);
    t.decimal("naturalness", 4, 3);
    t.decimal("clarity", 4, 3);
    t.decimal("consistency", 4, 3);
    t.jsonb("metadata").notNullable().defaultTo("{}");
    t.boolean("is_active").notNullable().defaultTo(false);
    t.text("status").notNullable().defaultTo("completed");
    t.string("training_job_id", 128);
    t.integer("version").notNullable().defaultTo(1);
    t.bigInteger("size_bytes");
    // Millisecond precision: timestamps round-trip through JS Dates and keyset page tokens exactly.
    t.timestamp("created_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.timestamp("updated_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.timestamp("deleted_at", { useTz: true, precision: 3 });
    t.unique(["user_id", "training_job_id"], { indexName: "voice_models_training_job_unique" });
  });

  await knex.raw(`
    ALTER TABLE voice_models
      ADD CONSTRAINT voice_models_provider_check CHECK (provider IN ('xtts-v2', 'google-cloud-tts', 'openai-tts')),
      ADD CONSTRAINT voice_models_status_check CHECK (status IN ('pending', 'training', 'completed', 'failed')),
      ADD CONSTRAINT voice_models_sample_rate_check CHECK (sample_rate IN (8000, 16000, 22050, 24000, 44100, 48000)),
      ADD CONSTRAINT voice_models_quality_check CHECK (quality_score BETWEEN 0 AND 1
        AND coalesce(similarity, 0) BETWEEN 0 AND 1 AND coalesce(naturalness, 0) BETWEEN 0 AND 1
        AND coalesce(clarity, 0) BETWEEN 0 AND 1 AND coalesce(consistency, 0) BETWEEN 0 AND 1),
      ADD CONSTRAINT voice_models_active_completed_check CHECK (NOT is_active OR (status = 'completed' AND deleted_at IS NULL)),
      ADD CONSTRAINT voice_models_metadata_object_check CHECK (jsonb_typeof(metadata) = 'object')
  `);
  // The design document's indexes, plus the one that holds "at most one active model per user".
  await knex.raw(`CREATE UNIQUE INDEX voice_models_one_active_per_user ON voice_models (user_id) WHERE is_active AND deleted_at IS NULL`);
  await knex.raw(`CREATE INDEX voice_models_user_id ON voice_models (user_id)`);
  await knex.raw(`CREATE INDEX voice_models_is_active ON voice_models (is_active)`);
  await knex.raw(`CREATE INDEX voice_models_quality_score ON voice_models (quality_score)`);
  await knex.raw(`CREATE INDEX voice_models_created_at ON voice_models (created_at)`);
  await knex.raw(`CREATE INDEX voice_models_user_active_deleted ON voice_models (user_id, is_active, deleted_at)`);
  // Serves ListVoiceModels' order (and its keyset) for one user's live models.
  await knex.raw(`
    CREATE INDEX voice_models_list_order ON voice_models
      (user_id, is_active DESC, quality_score DESC, created_at DESC, id DESC) WHERE deleted_at IS NULL
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("voice_models");
  await knex.schema.dropTable("model_owners");
}
