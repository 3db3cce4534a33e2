import type { Knex } from "knex";

// Model lineage: every model gets a number per user (1, 2, 3, ... in creation order, never
// reused) and may name the model it was trained from.
//
// The counter is model_owners.last_model_number, on the row every create already locks: the
// highest number the user's models ever had, so a purge never frees one. Triggers number each
// inserted row that comes without a number, whichever code writes it (the service, a restore,
// an operator's SQL), and move the counter past every inserted number (a restore may keep its
// model's).
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

  // A row gets one past both the counter and the user's highest number (a BEFORE ROW trigger's
  // queries see the rows the same statement inserted before it); the counter moves once per
  // statement. Updating the owner row for every row instead made one statement inserting n rows
  // for a user take O(n^2) (50,000 rows: 100 s instead of 3 s), each update walking the versions
  // the earlier ones left. Writers that hold the owner row's lock (every create and restore of
  // the service) never race here; any other concurrent writer fails on the unique constraint.
  await knex.raw(`
    CREATE FUNCTION number_voice_model() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.model_number IS NULL THEN
        SELECT greatest(
                 (SELECT last_model_number FROM model_owners WHERE user_id = NEW.user_id),
                 (SELECT max(model_number) FROM voice_models WHERE user_id = NEW.user_id),
                 0) + 1
          INTO NEW.model_number;
      END IF;
      RETURN NEW;
    END $$`);
  await knex.raw(`CREATE TRIGGER voice_models_number BEFORE INSERT ON voice_models FOR EACH ROW EXECUTE FUNCTION number_voice_model()`);
  await knex.raw(`
    CREATE FUNCTION count_voice_model_numbers() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE model_owners o SET last_model_number = highest.n
        FROM (SELECT user_id, max(model_number) AS n FROM inserted GROUP BY user_id) highest
       WHERE o.user_id = highest.user_id AND o.last_model_number < highest.n;
      RETURN NULL;
    END $$`);
  await knex.raw(`
    CREATE TRIGGER voice_models_number_counter AFTER INSERT ON voice_models
      REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION count_voice_model_numbers()`);

  // Cached models were stored without the new fields.
  await knex.raw(`DELETE FROM cache_voice_models`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP TRIGGER IF EXISTS voice_models_number_counter ON voice_models`);
  await knex.raw(`DROP TRIGGER IF EXISTS voice_models_number ON voice_models`);
  await knex.raw(`DROP FUNCTION IF EXISTS count_voice_model_numbers()`);
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
