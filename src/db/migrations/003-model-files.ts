import type { Knex } from "knex";

export async function up(knex: Knex): Promise<void> {
  // One stored, sealed object per (user, content hash): models of one user with the same bytes
  // share it (ref_count counts their live references). Never shared across users.
  await knex.schema.createTable("model_files", (t) => {
    t.uuid("id").primary().defaultTo(knex.raw("gen_random_uuid()"));
    t.string("user_id", 128).notNullable();
    t.string("sha256", 64).notNullable();
    t.bigInteger("size_bytes").notNullable();
    t.bigInteger("stored_bytes").notNullable();
    t.boolean("compressed").notNullable();
    // Envelope encryption: the object's data key wrapped by master key key_id. Rotation
    // re-wraps these two columns; the object itself is never rewritten.
    t.string("key_id", 128).notNullable();
    t.binary("wrapped_key").notNullable();
    // Where the object is now: under {userId}/{modelId}/ while live_refs > 0, moved to
    // deleted/{userId}/ when the last live reference goes. `location` is what the row asks for;
    // the file mover brings storage_key in line after the transaction commits.
    t.string("storage_key", 1024).notNullable();
    t.string("live_key", 1024).notNullable();
    t.string("deleted_key", 1024).notNullable();
    t.text("location").notNullable().defaultTo("live");
    t.integer("live_refs").notNullable().defaultTo(0);
    t.timestamp("created_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.timestamp("updated_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.unique(["user_id", "sha256"], { indexName: "model_files_user_sha_unique" });
  });
  await knex.raw(`
    ALTER TABLE model_files
      ADD CONSTRAINT model_files_location_check CHECK (location IN ('live', 'deleted')),
      ADD CONSTRAINT model_files_refs_check CHECK (live_refs >= 0)
  `);
  // Rows whose object is not where the row wants it: what the file mover works through.
  await knex.raw(`
    CREATE INDEX model_files_to_move ON model_files (updated_at)
      WHERE (location = 'live' AND storage_key <> live_key) OR (location = 'deleted' AND storage_key <> deleted_key)
  `);
  await knex.schema.alterTable("voice_models", (t) => {
    t.uuid("file_id").references("id").inTable("model_files");
  });
  await knex.raw(`CREATE INDEX voice_models_file_id ON voice_models (file_id) WHERE file_id IS NOT NULL`);

  // One sealed backup object under backups/{userId}/ per row.
  await knex.schema.createTable("backups", (t) => {
    t.uuid("id").primary();
    t.string("user_id", 128).notNullable();
    t.string("storage_key", 1024).notNullable().unique();
    t.bigInteger("size_bytes").notNullable();
    t.bigInteger("stored_bytes").notNullable();
    t.string("sha256", 64).notNullable();
    t.string("key_id", 128).notNullable();
    t.binary("wrapped_key").notNullable();
    t.integer("model_count").notNullable();
    t.boolean("include_deleted").notNullable();
    t.timestamp("created_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.index(["user_id", "created_at"], "backups_user_created");
  });

  // DeleteUserData: a tombstone per erased user, keyed by the SHA-256 of the id so it keeps
  // blocking after the id itself is gone. user_id is kept only while the purge job runs.
  await knex.schema.createTable("user_tombstones", (t) => {
    t.string("user_hash", 64).primary();
    t.string("user_id", 128);
    t.text("status").notNullable().defaultTo("purging");
    t.string("requested_by_hash", 64);
    t.bigInteger("objects_deleted").notNullable().defaultTo(0);
    t.timestamp("created_at", { useTz: true, precision: 3 }).notNullable().defaultTo(knex.raw("now()"));
    t.timestamp("finished_at", { useTz: true, precision: 3 });
  });
  await knex.raw(`ALTER TABLE user_tombstones ADD CONSTRAINT user_tombstones_status_check CHECK (status IN ('purging', 'done'))`);
  // Object keys the purge job must delete (recorded in the tombstone's transaction).
  await knex.schema.createTable("user_purge_keys", (t) => {
    t.string("user_hash", 64).notNullable().references("user_hash").inTable("user_tombstones");
    t.string("storage_key", 1024).notNullable();
    t.primary(["user_hash", "storage_key"]);
  });
  // The database refuses any live model or backup row of an erased user, whichever code path
  // writes it (create, undelete, restore, import): the block holds from the tombstone's commit on.
  await knex.raw(`
    CREATE FUNCTION refuse_erased_user() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM user_tombstones WHERE user_hash = encode(sha256(convert_to(NEW.user_id, 'UTF8')), 'hex')) THEN
        RAISE EXCEPTION 'user data of this user was deleted' USING ERRCODE = 'VM001';
      END IF;
      RETURN NEW;
    END $$`);
  await knex.raw(`
    CREATE TRIGGER voice_models_refuse_erased BEFORE INSERT OR UPDATE ON voice_models
      FOR EACH ROW WHEN (NEW.deleted_at IS NULL) EXECUTE FUNCTION refuse_erased_user()`);
  await knex.raw(`CREATE TRIGGER backups_refuse_erased BEFORE INSERT ON backups FOR EACH ROW EXECUTE FUNCTION refuse_erased_user()`);
  await knex.raw(`CREATE TRIGGER model_files_refuse_erased BEFORE INSERT ON model_files FOR EACH ROW EXECUTE FUNCTION refuse_erased_user()`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP TRIGGER IF EXISTS voice_models_refuse_erased ON voice_models`);
  await knex.schema.dropTable("user_purge_keys");
  await knex.schema.dropTable("user_tombstones");
  await knex.schema.dropTable("backups");
  await knex.schema.alterTable("voice_models", (t) => t.dropColumn("file_id"));
  await knex.schema.dropTable("model_files");
  await knex.raw(`DROP FUNCTION IF EXISTS refuse_erased_user()`);
}
