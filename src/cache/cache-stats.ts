/** Hit and miss counters of the caches, for the metrics endpoint (read them, never reset). */
export interface CacheCounters {
  hits: number;
  misses: number;
}

export interface CacheStats {
  /** The PostgreSQL cache tables, by table. */
  readonly tables: Record<"cache_voice_models" | "cache_voice_stats" | "cache_voice_analytics", CacheCounters>;
  /** The in-process cache of active models and list pages (user-read-cache.ts). */
  readonly inProcess: CacheCounters & {
    /** Users whose entries were dropped because one of their models changed (locally or by NOTIFY). */
    invalidations: number;
    /** Whole-cache drops after the LISTEN connection was lost. */
    resets: number;
    /** Whether the cache is serving (false while LISTEN is down: reads go to the database). */
    live: boolean;
    /** Its accounted size: the models it holds (the weight IN_PROCESS_CACHE_ENTRIES bounds). */
    models: number;
    /** Users with at least one entry. */
    users: number;
  };
}

export function createCacheStats(): CacheStats {
  const counters = () => ({ hits: 0, misses: 0 });
  return {
    tables: { cache_voice_models: counters(), cache_voice_stats: counters(), cache_voice_analytics: counters() },
    inProcess: { ...counters(), invalidations: 0, resets: 0, live: false, models: 0, users: 0 },
  };
}
