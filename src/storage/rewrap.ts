import type { Knex } from "knex";
import type { KeyProvider } from "./key-provider";

/** Tables whose rows hold a wrapped data key (key_id, wrapped_key). */
const WRAPPED_KEY_TABLES = ["model_files", "backups", "model_file_upload_chunks"] as const;

/**
 * Master key rotation: re-wraps every data key not wrapped by the current master key. Only the
 * rows change; the sealed objects are never rewritten. Safe to run on several instances at once
 * (each row is re-wrapped under a row lock and skipped when another instance got there first).
 */
export async function rewrapDataKeys(knex: Knex, keys: KeyProvider, batch = 500): Promise<number> {
  let rewrapped = 0;
  for (const table of WRAPPED_KEY_TABLES) {
    for (;;) {
      const done = await knex.transaction(async (trx) => {
        const rows = await trx(table).whereNot({ key_id: keys.currentKeyId }).limit(batch).forUpdate().skipLocked().select("id", "key_id", "wrapped_key");
        for (const row of rows) {
          const dataKey = await keys.unwrap({ keyId: row.key_id, wrapped: Buffer.from(row.wrapped_key) });
          const next = await keys.wrap(dataKey);
          await trx(table).where({ id: row.id }).update({ key_id: next.keyId, wrapped_key: next.wrapped });
        }
        return rows.length;
      });
      rewrapped += done;
      if (done < batch) break;
    }
  }
  return rewrapped;
}
