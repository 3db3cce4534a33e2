import type { CacheStats } from "./cache-stats";

interface Load {
  stale: boolean;
}

const weighOne = () => 1;

/** A user's list pages kept at most; a client paging through thousands of offsets drops its oldest. */
const SLOTS_PER_USER = 32;

/**
 * The in-process cache of reads that depend only on one user's models: their active model
 * (GetActiveVoiceModel) and their list pages (ListVoiceModels), each under a slot name. Every
 * model write invalidates its owner, so one invalidation per user covers both. Bounded by weight
 * (the models held: an active model weighs 1, a list page its models): at most `maxEntries` in
 * all, least recently filled user out first.
 *
 * It never serves a value older than a committed write:
 * - a local write marks its users "writing" before commit; their reads bypass the cache until
 *   the transaction has settled and the user's entries are dropped again (see beginWrite);
 * - other instances' writes arrive by NOTIFY and drop the user's entries (invalidate);
 * - a load that was in flight when its user was invalidated does not fill;
 * - while the LISTEN connection is down (live = false) nothing is served or filled, and the whole
 *   cache is dropped on losing it and again on getting it back.
 */
export class UserReadCache {
  private readonly users = new Map<string, Map<string, { value: unknown; weight: number }>>();
  private weight = 0;
  private readonly loads = new Map<string, Set<Load>>();
  private readonly writing = new Map<string, number>();
  private live: boolean;

  constructor(
    private readonly maxEntries: number,
    private readonly stats: CacheStats,
    live: boolean,
  ) {
    this.live = live && maxEntries > 0;
    stats.inProcess.live = this.live;
  }

  async get<T>(userId: string, slot: string, load: () => Promise<T>, weigh: (value: T) => number = weighOne): Promise<T> {
    const counters = this.stats.inProcess;
    if (!this.live || this.writing.has(userId)) {
      counters.misses++;
      return load();
    }
    const hit = this.users.get(userId)?.get(slot);
    if (hit) {
      counters.hits++;
      return hit.value as T;
    }
    counters.misses++;
    const token: Load = { stale: false };
    let pending = this.loads.get(userId);
    if (!pending) this.loads.set(userId, (pending = new Set()));
    pending.add(token);
    try {
      const value = await load();
      if (!token.stale && this.live && !this.writing.has(userId)) this.store(userId, slot, value, Math.max(1, weigh(value)));
      return value;
    } finally {
      pending.delete(token);
      if (pending.size === 0 && this.loads.get(userId) === pending) this.loads.delete(userId);
    }
  }

  private store(userId: string, slot: string, value: unknown, weight: number) {
    let entries = this.users.get(userId);
    if (entries) this.users.delete(userId); // re-inserted below: most recently filled last
    else entries = new Map();
    this.users.set(userId, entries);
    this.dropSlot(entries, slot);
    entries.set(slot, { value, weight });
    this.weight += weight;
    if (entries.size > SLOTS_PER_USER) this.dropSlot(entries, entries.keys().next().value as string);
    while (this.weight > this.maxEntries && this.users.size > 0) this.dropUser(this.users.keys().next().value as string);
    this.account();
  }

  private account() {
    this.stats.inProcess.models = this.weight;
    this.stats.inProcess.users = this.users.size;
  }

  private dropSlot(entries: Map<string, { weight: number }>, slot: string) {
    const entry = entries.get(slot);
    if (!entry) return;
    this.weight -= entry.weight;
    entries.delete(slot);
  }

  private dropUser(userId: string): boolean {
    const entries = this.users.get(userId);
    if (!entries) return false;
    for (const { weight } of entries.values()) this.weight -= weight;
    this.users.delete(userId);
    this.account();
    return true;
  }

  /** Drops a user's entries and spoils their loads in flight. */
  invalidate(userId: string): void {
    if (this.dropUser(userId)) this.stats.inProcess.invalidations++;
    const pending = this.loads.get(userId);
    if (pending) for (const token of pending) token.stale = true;
  }

  /**
   * A local transaction is about to change these users' models: bypass their entries until it
   * settles (`settled` resolves or rejects), then drop them once more.
   */
  beginWrite(userIds: Iterable<string>, settled: Promise<unknown>): void {
    const users = [...new Set(userIds)];
    for (const u of users) {
      this.writing.set(u, (this.writing.get(u) ?? 0) + 1);
      this.invalidate(u);
    }
    const end = () => {
      for (const u of users) {
        const n = (this.writing.get(u) ?? 1) - 1;
        if (n <= 0) this.writing.delete(u);
        else this.writing.set(u, n);
        this.invalidate(u);
      }
    };
    settled.then(end, end);
  }

  /** Drops everything (LISTEN lost or regained). */
  reset(): void {
    this.users.clear();
    this.weight = 0;
    this.account();
    for (const pending of this.loads.values()) for (const token of pending) token.stale = true;
    this.stats.inProcess.resets++;
  }

  /** Serving on (LISTEN is up) or off (down: every read goes to the database). */
  setLive(live: boolean): void {
    this.reset();
    this.live = live && this.maxEntries > 0;
    this.stats.inProcess.live = this.live;
  }
}
