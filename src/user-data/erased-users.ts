import type { Knex } from "knex";
import type { UserHasher } from "../auth/user-hash";
import type { Notifications } from "../db/notifications";
import type { Tx } from "../db/transaction";

/** The NOTIFY channel an erasure announces its tombstone on (payload: the keyed hash, never the id). */
export const ERASED_CHANNEL = "voice_model_user_erased";

/** Verdicts kept per user id; the cache starts over when full or when a user is erased. */
const MEMO_ENTRIES = 10_000;
/** How far before the newest tombstone seen a periodic reread starts. */
const RECENT_MARGIN_MS = 3_600_000;

/**
 * The keyed hashes of every erased user, in memory, so each call can refuse an erased user's
 * still-valid token without a database round trip. Loaded at start; an erasure here adds its
 * hash at once, one elsewhere arrives by NOTIFY; after a lost LISTEN (anything may have been
 * missed) the set is read again, and periodically its recent part.
 */
export class ErasedUsers {
  private readonly hashes = new Set<string>();
  private readonly memo = new Map<string, boolean>();
  private newest: Date | undefined;
  /** Whether the tombstones were read once (before that, no call can be checked). */
  loaded = false;

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

  /**
   * Reads the tombstones' hashes: all of them, or (recent) those made within the last hour before
   * the newest one seen, so an erasure committed late (created_at is its transaction's start) is
   * still found. Tombstones are never removed, so what is read is added to what is known, and an
   * erasure added here while the read ran is not lost.
   */
  async reload(scope: "all" | "recent" = "all"): Promise<void> {
    const query = this.knex("user_tombstones");
    if (scope === "recent" && this.newest) query.where("created_at", ">", new Date(this.newest.getTime() - RECENT_MARGIN_MS));
    const rows = (await query.select("user_hash", "created_at")) as Array<{ user_hash: string; created_at: Date }>;
    this.loaded = true;
    let added = 0;
    for (const row of rows) {
      if (!this.hashes.has(row.user_hash)) added++;
      this.hashes.add(row.user_hash);
      if (!this.newest || row.created_at > this.newest) this.newest = row.created_at;
    }
    if (added > 0) this.memo.clear();
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

  /** What a row may hold for a user id: the erasure hash of an erased user, else the id. */
  readonly stored = (userId: string): string => (this.has(userId) ? this.hasher.hash(userId) : userId);

  /** Tells the other instances, at the commit of trx. */
  async announce(trx: Tx, hash: string): Promise<void> {
    if (this.notifications) await trx.raw(`SELECT pg_notify(?, ?)`, [ERASED_CHANNEL, hash]);
  }
}
