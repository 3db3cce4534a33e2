import type { Knex } from "knex";

const CACHE_TABLES = ["cache_voice_models", "cache_voice_stats", "cache_voice_analytics"] as const;

// Sums that must add up exactly (cost, audio seconds) are numeric; the pg and PGlite type
// parsers turn them into JS numbers when read.
function usageSums(t: Knex.CreateTableBuilder) {
  t.bigInteger("usage_count").notNullable().defaultTo(0);
  t.decimal("cost_sum", 20, 6).notNullable().defaultTo(0);
  t.bigInteger("latency_sum").notNullable().defaultTo(0);
  t.bigInteger("characters_sum").notNullable().defaultTo(0);
  t.decimal("audio_seconds_sum", 20, 3).notNullable().defaultTo(0);
  t.bigInteger("rating_sum").notNullable().defaultTo(0);
  t.bigInteger("rating_count").notNullable().defaultTo(0);
  t.timestamp("last_used_at", { useTz: true, precision: 3 });
}

export async function up(knex: Knex): Promise<void> {
  // Raw events, kept for USAGE_RETENTION_DAYS; the idempotency key is unique per model while
  // the event is kept.
  await knex.schema.createTable("usage_events", (t) => {
    t.bigIncrements("id").primary();
    t.uuid("model_id").notNullable().references("id").inTable("voice_models");
    t.string("user_id", 128).notNullable();
    t.string("idempotency_key", 128).notNullable();
    t.string("payload_hash", 64).notNullable();
    t.bigInteger("characters");
    t.decimal("audio_seconds", 12, 3);
    t.integer("latency_ms").notNullable();
    t.decimal("cost", 14, 6).notNullable();
    t.smallint("quality_rating");
    t.timestamp("used_at", { useTz: true, precision: 3 }).notNullable();
    t.timestamp("recorded_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.unique(["model_id", "idempotency_key"], { indexName: "usage_events_idempotency" });
    t.index(["recorded_at"], "usage_events_recorded_at");
  });

  // Lifetime totals per model, updated in the event's transaction.
  await knex.schema.createTable("usage_totals", (t) => {
    t.uuid("model_id").primary().references("id").inTable("voice_models");
    usageSums(t);
  });

  // Daily (UTC) roll-ups per model, for time ranges.
  await knex.schema.createTable("usage_daily", (t) => {
    t.uuid("model_id").notNullable().references("id").inTable("voice_models");
    t.date("day").notNullable();
    usageSums(t);
    t.primary(["model_id", "day"]);
  });

  // The design document's cache tables. Unlogged: a crash empties them, which is only a cold cache.
  for (const table of CACHE_TABLES) {
    await knex.raw(`
      CREATE UNLOGGED TABLE ${table} (
        cache_key text PRIMARY KEY,
        user_id varchar(128) NOT NULL,
        model_id uuid,
        value jsonb NOT NULL,
        expires_at timestamptz(3) NOT NULL,
        hit_count bigint NOT NULL DEFAULT 0,
        last_accessed_at timestamptz(3),
        created_at timestamptz(3) NOT NULL DEFAULT now()
      )`);
    await knex.raw(`CREATE INDEX ${table}_user_id ON ${table} (user_id)`);
    await knex.raw(`CREATE INDEX ${table}_expires_at ON ${table} (expires_at)`);
  }
  await knex.raw(`CREATE INDEX cache_voice_stats_model_id ON cache_voice_stats (model_id)`);

  // One generation per scope ("user:{id}", "model:{id}"): every write that changes cached values
  // bumps its scopes' generations (before deleting the rows), and a cache fill only lands if the
  // generation it read before loading is still current. This closes the race where a reader
  // fills the cache with a value it read before a write committed.
  await knex.raw(`
    CREATE UNLOGGED TABLE cache_generations (
      scope text PRIMARY KEY,
      generation bigint NOT NULL DEFAULT 0
    )`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("cache_generations");
  for (const table of CACHE_TABLES) await knex.schema.dropTable(table);
  await knex.schema.dropTable("usage_daily");
  await knex.schema.dropTable("usage_totals");
  await knex.schema.dropTable("usage_events");
}
