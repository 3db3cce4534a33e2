import type { Knex } from "knex";
import type { UserHasher } from "../auth/user-hash";
import type { Notifications } from "../db/notifications";
import type { Tx } from "../db/transaction";

/** The NOTIFY channel an erasure announces its tombstone on (payload: the keyed hash, never the id). */
export const ERASED_CHANNEL = "voice_model_user_erased";

/** Verdicts kept per user id; the cache starts over when full or when a user is erased. */
const MEMO_ENTRIES = 10_000;

/**
 * The keyed hashes of every erased user, in memory, so each call can refuse an erased user's
 * still-valid token without a database round trip. Loaded at start; an erasure here adds its
 * hash at once, one elsewhere arrives by NOTIFY; after a lost LISTEN (anything may have been
 * missed) and periodically the set is read again.
 */
export class ErasedUsers {
  private hashes = new Set<string>();
  private readonly memo = new Map<string, boolean>();

  constructor(
    private readonly knex: Knex,
    private readonly hasher: UserHasher,
    private readonly notifications: Notifications | undefined,
  ) {
    notifications?.listen(ERASED_CHANNEL, {
      onMessage: (hash) => hash && this.add(hash),
      onLive: (live) => void (live && this.reload().catch(() => undefined)),
    });
  }

  /** Reads every tombstone's hash. */
  async reload(): Promise<void> {
    const hashes = (await this.knex("user_tombstones").pluck("user_hash")) as string[];
    this.hashes = new Set(hashes);
    this.memo.clear();
  }

  /** How many users were erased (0: no call needs a hash). */
  get size(): number {
    return this.hashes.size;
  }

  add(hash: string): void {
    this.hashes.add(hash);
    this.memo.clear();
  }

  /** Whether the user was erased: one HMAC per user id and memo generation, a Map lookup after. */
  has(userId: string): boolean {
    if (this.hashes.size === 0) return false;
    let erased = this.memo.get(userId);
    if (erased === undefined) {
      erased = this.hashes.has(this.hasher.hash(userId));
      if (this.memo.size >= MEMO_ENTRIES) this.memo.clear();
      this.memo.set(userId, erased);
    }
    return erased;
  }

  /** Tells the other instances, at the commit of trx. */
  async announce(trx: Tx, hash: string): Promise<void> {
    if (this.notifications) await trx.raw(`SELECT pg_notify(?, ?)`, [ERASED_CHANNEL, hash]);
  }
}
