import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { CacheStats } from "./cache-stats";

interface Load {
  stale: boolean;
}

/**
 * The in-process cache of each user's active model (null: the user has none), in front of
 * GetActiveVoiceModel. Bounded (oldest entry out first).
 *
 * It never serves a value older than a committed write:
 * - a local write marks its users "writing" before commit; their reads bypass the cache until
 *   the transaction has settled and the entry is dropped again (see beginWrite);
 * - other instances' writes arrive by NOTIFY and drop the entry (invalidate);
 * - a load that was in flight when its user was invalidated does not fill;
 * - while the LISTEN connection is down (live = false) nothing is served or filled, and the whole
 *   cache is dropped on losing it and again on getting it back.
 */
export class ActiveModelCache {
  private readonly entries = new Map<string, VoiceModelRecord | null>();
  private readonly loads = new Map<string, Set<Load>>();
  private readonly writing = new Map<string, number>();
  private live: boolean;

  constructor(
    private readonly maxEntries: number,
    private readonly stats: CacheStats,
    live: boolean,
  ) {
    this.live = live && maxEntries > 0;
    stats.activeModel.live = this.live;
  }

  async get(userId: string, load: () => Promise<VoiceModelRecord | undefined>): Promise<VoiceModelRecord | undefined> {
    const counters = this.stats.activeModel;
    if (!this.live || this.writing.has(userId)) {
      counters.misses++;
      return load();
    }
    const cached = this.entries.get(userId);
    if (cached !== undefined) {
      counters.hits++;
      return cached ?? undefined;
    }
    counters.misses++;
    const token: Load = { stale: false };
    let pending = this.loads.get(userId);
    if (!pending) this.loads.set(userId, (pending = new Set()));
    pending.add(token);
    try {
      const model = await load();
      if (!token.stale && this.live && !this.writing.has(userId)) this.store(userId, model ?? null);
      return model;
    } finally {
      pending.delete(token);
      if (pending.size === 0 && this.loads.get(userId) === pending) this.loads.delete(userId);
    }
  }

  private store(userId: string, value: VoiceModelRecord | null) {
    this.entries.delete(userId);
    this.entries.set(userId, value);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
  }

  /** Drops a user's entry and spoils loads in flight. */
  invalidate(userId: string): void {
    if (this.entries.delete(userId)) this.stats.activeModel.invalidations++;
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
    this.entries.clear();
    for (const pending of this.loads.values()) for (const token of pending) token.stale = true;
    this.stats.activeModel.resets++;
  }

  /** Serving on (LISTEN is up) or off (down: every read goes to the database). */
  setLive(live: boolean): void {
    this.reset();
    this.live = live && this.maxEntries > 0;
    this.stats.activeModel.live = this.live;
  }
}
