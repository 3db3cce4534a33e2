import type { Knex } from "knex";
import { rehashLegacyDetails } from "../audit/audit-log";
import { sha256Hex, type UserHasher } from "../auth/user-hash";
import type { Tx } from "../db/transaction";

export class ErasureKeyMismatchError extends Error {
  override readonly name = "ErasureKeyMismatchError";
}

/**
 * At start-up, in one transaction: checks that this instance's erasure key is the one the
 * database's hashes were made with (the first start records its fingerprint), then converts
 * every erasure hashed before hashes were keyed: each unkeyed tombstone's hash h, wherever it
 * was written (tombstone, purge keys, audit and usage columns, change events), becomes
 * HMAC(key, h), which is what the keyed hash of the same id is; an id-like word of an old audit
 * row's text whose SHA-256 is h becomes that keyed hash too. Tombstones flip to keyed in the
 * same transaction, so a second run (or a racing instance) finds nothing left. Returns how many.
 */
export async function keyOldErasures(knex: Knex, hasher: UserHasher): Promise<number> {
  return knex.transaction(async (trx) => {
    // Instances starting together take turns.
    await trx.raw(`LOCK TABLE erasure_key_check IN EXCLUSIVE MODE`);
    const check = await trx("erasure_key_check").first("key_check");
    if (!check) await trx("erasure_key_check").insert({ key_check: hasher.keyCheck });
    else if (check.key_check !== hasher.keyCheck) {
      throw new ErasureKeyMismatchError(
        "this instance's erasure key (ERASURE_KEY, or the data folder's erasure-key file) is not the one this database's erased users were hashed with; every instance needs the same key",
      );
    }
    const old = (await trx("user_tombstones").where({ keyed: false }).select("user_hash", "requested_by_hash")) as Array<{
      user_hash: string;
      requested_by_hash: string | null;
    }>;
    for (const row of old) await rehash(trx, hasher, row.user_hash, row.requested_by_hash);
    // Their ids may still sit in the text of audit rows written before ids were kept apart.
    await rehashLegacyDetails(trx, new Map(old.map((row) => [row.user_hash, hasher.rehash(row.user_hash)])), sha256Hex);
    return old.length;
  });
}

async function rehash(trx: Tx, hasher: UserHasher, oldHash: string, requestedBy: string | null): Promise<void> {
  const hash = hasher.rehash(oldHash);
  // The purge keys follow the tombstone's key (ON UPDATE CASCADE).
  await trx("user_tombstones")
    .where({ user_hash: oldHash, keyed: false })
    .update({ user_hash: hash, requested_by_hash: requestedBy === null ? null : hasher.rehash(requestedBy), keyed: true });
  for (const [table, column] of [
    ["audit_events", "actor_id"],
    ["audit_events", "target_user_id"],
    ["usage_events", "user_id"],
    ["voice_model_events", "user_id"],
  ]) {
    await trx(table).where(column, oldHash).update({ [column]: hash });
  }
  await trx.raw(`UPDATE voice_model_events SET audience = array_replace(audience, ?::varchar, ?::varchar) WHERE audience @> ARRAY[?]::varchar[]`, [
    oldHash,
    hash,
    oldHash,
  ]);
}
