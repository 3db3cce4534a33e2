import type { Knex } from "knex";

// Model lineage: every model gets a number per user (1, 2, 3, ... in creation order, never
// reused) and may name the model it was trained from.
//
// The counter is model_owners.last_model_number, on the row every create already locks. A
// trigger numbers each inserted row that comes without a number, so every insert takes its
// number under that row lock whichever code writes it (the service, a restore, an operator's
// SQL); a row inserted with a number (a restore keeping its model's) moves the counter past it.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE model_owners ADD COLUMN last_model_number integer NOT NULL DEFAULT 0`);
  // A purged parent (retention purge, DeleteUserData) leaves its children as roots.
  await knex.raw(`
    ALTER TABLE voice_models
      ADD COLUMN model_number integer,
      ADD COLUMN parent_model_id uuid REFERENCES voice_models (id) ON DELETE SET NULL,
      ADD CONSTRAINT voice_models_parent_not_self_check CHECK (parent_model_id <> id)`);

  // Existing models are numbered per user in creation order.
  await knex.raw(`
    UPDATE voice_models v SET model_number = numbered.n
      FROM (SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY created_at, id) AS n FROM voice_models) numbered
     WHERE v.id = numbered.id`);
  await knex.raw(`INSERT INTO model_owners (user_id) SELECT DISTINCT user_id FROM voice_models ON CONFLICT (user_id) DO NOTHING`);
  await knex.raw(`
    UPDATE model_owners o SET last_model_number = highest.n
      FROM (SELECT user_id, max(model_number) AS n FROM voice_models GROUP BY user_id) highest
     WHERE o.user_id = highest.user_id AND o.last_model_number < highest.n`);

  await knex.raw(`
    ALTER TABLE voice_models
      ALTER COLUMN model_number SET NOT NULL,
      ADD CONSTRAINT voice_models_model_number_check CHECK (model_number > 0),
      ADD CONSTRAINT voice_models_model_number_unique UNIQUE (user_id, model_number)`);
  // Descendants are found by parent (GetVoiceModelLineage, ListVoiceModels lineage_of).
  await knex.raw(`CREATE INDEX voice_models_parent ON voice_models (parent_model_id) WHERE parent_model_id IS NOT NULL`);

  await knex.raw(`
    CREATE FUNCTION number_voice_model() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.model_number IS NULL THEN
        UPDATE model_owners SET last_model_number = last_model_number + 1
         WHERE user_id = NEW.user_id RETURNING last_model_number INTO NEW.model_number;
      ELSE
        UPDATE model_owners SET last_model_number = NEW.model_number
         WHERE user_id = NEW.user_id AND last_model_number < NEW.model_number;
      END IF;
      RETURN NEW;
    END $$`);
  await knex.raw(`CREATE TRIGGER voice_models_number BEFORE INSERT ON voice_models FOR EACH ROW EXECUTE FUNCTION number_voice_model()`);

  // Cached models were stored without the new fields.
  await knex.raw(`DELETE FROM cache_voice_models`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP TRIGGER IF EXISTS voice_models_number ON voice_models`);
  await knex.raw(`DROP FUNCTION IF EXISTS number_voice_model()`);
  await knex.raw(`DROP INDEX IF EXISTS voice_models_parent`);
  await knex.raw(`
    ALTER TABLE voice_models
      DROP CONSTRAINT IF EXISTS voice_models_model_number_unique,
      DROP CONSTRAINT IF EXISTS voice_models_model_number_check,
      DROP CONSTRAINT IF EXISTS voice_models_parent_not_self_check,
      DROP COLUMN IF EXISTS parent_model_id,
      DROP COLUMN IF EXISTS model_number`);
  await knex.raw(`ALTER TABLE model_owners DROP COLUMN IF EXISTS last_model_number`);
  await knex.raw(`DELETE FROM cache_voice_models`);
}
