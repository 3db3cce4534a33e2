import type { Knex } from "knex";

// Erasure leaves keyed hashes (HMAC-SHA-256 under ERASURE_KEY of the id's SHA-256) instead of a
// plain SHA-256, and audit rows name users only in structured places it can rewrite.
//
// A migration cannot know the key: tombstones hashed before get keyed = false, and the service
// converts them (and every copy of their hash) to HMAC(key, old hash) at start-up, in one
// transaction, flipping keyed. erasure_key_check holds a fingerprint of the key so an instance
// with another key refuses to start instead of missing tombstones.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE user_tombstones ADD COLUMN keyed boolean NOT NULL DEFAULT false`);
  await knex.raw(`ALTER TABLE user_tombstones ALTER COLUMN keyed SET DEFAULT true`);
  // The start-up conversion changes user_hash: the purge keys follow it.
  await knex.raw(`ALTER TABLE user_purge_keys DROP CONSTRAINT user_purge_keys_user_hash_foreign`);
  await knex.raw(`
    ALTER TABLE user_purge_keys ADD CONSTRAINT user_purge_keys_user_hash_foreign
      FOREIGN KEY (user_hash) REFERENCES user_tombstones (user_hash) ON UPDATE CASCADE`);
  await knex.raw(`
    CREATE TABLE erasure_key_check (
      singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
      key_check varchar(64) NOT NULL,
      created_at timestamptz(3) NOT NULL DEFAULT now()
    )`);
  // Users an audit row names besides its two id columns (a share's targets, the user a refusal
  // was about); details refer to them as "{user:N}", filled in when read. NULL marks the rows
  // written before, whose details may hold ids as text (erasure rewrites those in the text).
  await knex.raw(`ALTER TABLE audit_events ADD COLUMN user_ids varchar(128)[]`);
  await knex.raw(`ALTER TABLE audit_events ALTER COLUMN user_ids SET DEFAULT '{}'`);
  await knex.raw(`CREATE INDEX audit_events_user_ids ON audit_events USING gin (user_ids)`);
  // HMAC-SHA-256 (RFC 2104) from the built-in sha256, no extension needed. It takes the key's two
  // 64-byte pads (key XOR 0x36..., key XOR 0x5c...) as one value, worked out once by the service:
  // a loop over the key's bytes here cost 15 us a row; with the pads it is three sha256 calls.
  await knex.raw(`
    CREATE FUNCTION erasure_hmac(pads bytea, message bytea) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
      SELECT encode(sha256(substring(pads FROM 65 FOR 64) || sha256(substring(pads FROM 1 FOR 64) || message)), 'hex')
    $$`);
  // The key (as its pads, hex) reaches the trigger per transaction (set_config(..., true), safe
  // behind a transaction pooler). Without it the trigger cannot tell erased users apart: it
  // refuses the write once any tombstone exists rather than let one through.
  await knex.raw(`
    CREATE OR REPLACE FUNCTION refuse_erased_user() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      pads text := current_setting('voice_model.erasure_key', true);
    BEGIN
      IF pads IS NULL OR pads = '' THEN
        IF EXISTS (SELECT 1 FROM user_tombstones) THEN
          RAISE EXCEPTION 'the erasure key is not set in this transaction' USING ERRCODE = 'VM002';
        END IF;
        RETURN NEW;
      END IF;
      IF EXISTS (SELECT 1 FROM user_tombstones WHERE user_hash =
          erasure_hmac(decode(pads, 'hex'), convert_to(encode(sha256(convert_to(NEW.user_id, 'UTF8')), 'hex'), 'UTF8'))) THEN
        RAISE EXCEPTION 'user data of this user was deleted' USING ERRCODE = 'VM001';
      END IF;
      RETURN NEW;
    END $$`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE OR REPLACE FUNCTION refuse_erased_user() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM user_tombstones WHERE user_hash = encode(sha256(convert_to(NEW.user_id, 'UTF8')), 'hex')) THEN
        RAISE EXCEPTION 'user data of this user was deleted' USING ERRCODE = 'VM001';
      END IF;
      RETURN NEW;
    END $$`);
  await knex.raw(`DROP FUNCTION IF EXISTS erasure_hmac(bytea, bytea)`);
  await knex.raw(`DROP INDEX IF EXISTS audit_events_user_ids`);
  await knex.raw(`ALTER TABLE audit_events DROP COLUMN IF EXISTS user_ids`);
  await knex.raw(`DROP TABLE IF EXISTS erasure_key_check`);
  await knex.raw(`ALTER TABLE user_purge_keys DROP CONSTRAINT user_purge_keys_user_hash_foreign`);
  await knex.raw(`
    ALTER TABLE user_purge_keys ADD CONSTRAINT user_purge_keys_user_hash_foreign
      FOREIGN KEY (user_hash) REFERENCES user_tombstones (user_hash)`);
  await knex.raw(`ALTER TABLE user_tombstones DROP COLUMN IF EXISTS keyed`);
}
