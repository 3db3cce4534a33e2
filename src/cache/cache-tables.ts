import type { Knex } from "knex";
import { readRows } from "../db/read-rows";
import type { Db, Tx } from "../db/transaction";
import type { CacheStats } from "./cache-stats";

/**
 * The design document's PostgreSQL cache tables, read through.
 *
 * Correctness across instances: every write bumps the generation of the scopes it changes
 * (cache_generations) and then deletes the affected rows, all inside its own transaction. A
 * reader that misses notes the scope's generation before loading, and its fill is an
 * INSERT ... WHERE generation = noted (reading the generation FOR SHARE, so a fill racing an
 * uncommitted write waits for it and then sees the new generation). So once a write commits, no
 * row holding a value read before it can be served by any instance.
 *
 * A fill is off the reply's path: it is queued, and the queue is written by one writer, one
 * INSERT per table for everything queued meanwhile (so under load many fills share a round trip
 * and a commit). Each row keeps its own generation check, so a late fill is as safe as a prompt one.
 */

export type CacheTable = "cache_voice_models" | "cache_voice_stats" | "cache_voice_analytics";
export const CACHE_TABLES: readonly CacheTable[] = ["cache_voice_models", "cache_voice_stats", "cache_voice_analytics"];

export const scopes = {
  user: (userId: string) => `user:${userId}`,
  model: (modelId: string) => `model:${modelId}`,
};

export interface CacheEntry {
  table: CacheTable;
  key: string;
  /** The generation scope whose writes invalidate this entry. */
  scope: string;
  /** The user whose data it is (rows are deleted by user). */
  userId: string;
  /** The model it is about, for per-model invalidation (stats). */
  modelId?: string;
  ttlSeconds: number;
}

export interface Codec<T> {
  encode(value: T): unknown;
  decode(json: unknown): T;
}

interface PendingHits {
  table: CacheTable;
  key: string;
  hits: number;
  lastAccess: Date;
}

interface PendingFill {
  entry: CacheEntry;
  /** The value as its codec encodes it (JSON). */
  value: unknown;
  generation: number;
}

/** Fills written by one statement at most. */
const FILL_BATCH = 200;

const rowsOf = <T>(result: unknown): T[] => (result as { rows: T[] }).rows;

/** A row's identity across the cache tables: the key of the pending hit counts and fills. */
const rowId = (entry: Pick<CacheEntry, "table" | "key">) => `${entry.table}\u0000${entry.key}`;

export class CacheTables {
  private pendingHits = new Map<string, PendingHits>();
  /** Fills not written yet, by table and key (a later fill of a key replaces an earlier one). */
  private pendingFills = new Map<string, PendingFill>();
  private filling: Promise<void> | undefined;

  constructor(
    private readonly knex: Knex,
    private readonly stats: CacheStats,
  ) {}

  /** Serves a fresh row, or loads, fills (unless a write raced the load) and returns the value. */
  async getOrLoad<T>(
    entry: CacheEntry,
    load: () => Promise<T | undefined>,
    codec: Codec<T>,
    /** The owner, when only the loaded value names it (a model looked up by id). */
    userIdOf?: (value: T) => string,
  ): Promise<T | undefined> {
    const [row] = await readRows<{ generation: number | null; value: unknown }>(
      this.knex,
      `SELECT (SELECT generation FROM cache_generations WHERE scope = ?) AS generation,
              (SELECT value FROM ${entry.table} WHERE cache_key = ? AND expires_at > now()) AS value`,
      [entry.scope, entry.key],
    );
    const counters = this.stats.tables[entry.table];
    if (row.value !== null && row.value !== undefined) {
      counters.hits++;
      this.countHit(entry);
      return codec.decode(row.value);
    }
    counters.misses++;
    const generation = row.generation ?? (await this.createGeneration(entry.scope));
    const value = await load();
    if (value !== undefined && generation !== undefined) {
      const userId = userIdOf ? userIdOf(value) : entry.userId;
      this.queueFill({ ...entry, userId }, codec.encode(value), generation);
    }
    return value;
  }

  /** Resolves once every fill queued so far has been written (or failed). */
  async fillsWritten(): Promise<void> {
    while (this.filling) await this.filling;
  }

  /**
   * A scope seen for the first time gets generation 0. When a writer created it meanwhile the
   * fill is skipped (undefined): its generation is unknown to this reader.
   */
  private async createGeneration(scope: string): Promise<number | undefined> {
    const inserted = rowsOf(
      await this.knex.raw(`INSERT INTO cache_generations (scope) VALUES (?) ON CONFLICT (scope) DO NOTHING RETURNING scope`, [scope]),
    );
    return inserted.length === 1 ? 0 : undefined;
  }

  private queueFill(entry: CacheEntry, value: unknown, generation: number): void {
    this.pendingFills.set(rowId(entry), { entry, value, generation });
    // Started on the next turn, so the misses answered in this one share its first statement.
    this.filling ??= new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.writeFills())
      .finally(() => (this.filling = undefined));
  }

  /** Writes queued fills until none is left; a failed fill only leaves the cache cold. */
  private async writeFills(): Promise<void> {
    while (this.pendingFills.size > 0) {
      const batch = [...this.pendingFills.values()].slice(0, FILL_BATCH);
      for (const fill of batch) this.pendingFills.delete(rowId(fill.entry));
      for (const table of CACHE_TABLES) {
        const rows = batch.filter((f) => f.entry.table === table);
        if (rows.length > 0) await this.fill(table, rows).catch(() => undefined);
      }
    }
  }

  /**
   * One INSERT of many fills, each written only while its scope's generation is the one its
   * reader noted (read FOR SHARE: a fill racing an uncommitted write waits for it, then skips).
   */
  private async fill(table: CacheTable, fills: PendingFill[]): Promise<void> {
    const rows = fills.map(({ entry, value, generation }) => ({
      key: entry.key,
      user_id: entry.userId,
      model_id: entry.modelId ?? null,
      value,
      ttl: entry.ttlSeconds,
      scope: entry.scope,
      generation,
    }));
    await this.knex.raw(
      `INSERT INTO ${table} (cache_key, user_id, model_id, value, expires_at)
       SELECT v.key, v.user_id, v.model_id::uuid, v.value, now() + make_interval(secs => v.ttl)
       FROM jsonb_to_recordset(?::jsonb) AS v(key text, user_id text, model_id text, value jsonb, ttl int, scope text, generation bigint)
       JOIN cache_generations g ON g.scope = v.scope AND g.generation = v.generation
       FOR SHARE OF g
       ON CONFLICT (cache_key) DO UPDATE
         SET value = excluded.value, expires_at = excluded.expires_at, created_at = now()`,
      [JSON.stringify(rows)],
    );
  }

  private countHit(entry: CacheEntry) {
    const id = rowId(entry);
    const pending = this.pendingHits.get(id);
    if (pending) {
      pending.hits++;
      pending.lastAccess = new Date();
    } else {
      this.pendingHits.set(id, { table: entry.table, key: entry.key, hits: 1, lastAccess: new Date() });
    }
  }

  /** Writes the hit counts and last access times gathered in memory since the last flush. */
  async flushHits(): Promise<void> {
    if (this.pendingHits.size === 0) return;
    const pending = [...this.pendingHits.values()];
    this.pendingHits = new Map();
    for (const table of CACHE_TABLES) {
      const rows = pending.filter((p) => p.table === table).sort((a, b) => (a.key < b.key ? -1 : 1));
      for (let i = 0; i < rows.length; i += 500) {
        const chunk = rows.slice(i, i + 500);
        await this.knex.raw(
          `UPDATE ${table} AS c SET hit_count = c.hit_count + v.hits,
                  last_accessed_at = greatest(c.last_accessed_at, v.at)
           FROM (VALUES ${chunk.map(() => "(?, ?::bigint, ?::timestamptz)").join(", ")}) AS v(key, hits, at)
           WHERE c.cache_key = v.key`,
          chunk.flatMap((p) => [p.key, p.hits, p.lastAccess.toISOString()]),
        );
      }
    }
  }

  /** Deletes expired rows, batchSize at a time; returns how many went. */
  async sweepExpired(batchSize: number): Promise<number> {
    let swept = 0;
    for (const table of CACHE_TABLES) {
      for (;;) {
        const n = rowsOf(
          await this.knex.raw(
            `DELETE FROM ${table} WHERE cache_key IN
               (SELECT cache_key FROM ${table} WHERE expires_at <= now() LIMIT ?) RETURNING 1`,
            [batchSize],
          ),
        ).length;
        swept += n;
        if (n < batchSize) break;
      }
    }
    return swept;
  }
}

export interface Invalidation {
  /** Scopes whose generation to bump. */
  scopes: Iterable<string>;
  /** Users whose cache_voice_models rows (their models and lists) go. */
  modelUsers?: Iterable<string>;
  /** Users whose analytics go. */
  analyticsUsers?: Iterable<string>;
  /** Models whose stats go. */
  statsModels?: Iterable<string>;
}

/**
 * Runs inside a writing transaction: bumps the generations first (waiting out fills in flight),
 * then deletes every affected row. Commits or rolls back with the write.
 */
export async function invalidateInTransaction(trx: Tx, inv: Invalidation): Promise<void> {
  const scopeList = [...new Set(inv.scopes)].sort();
  if (scopeList.length > 0) {
    await trx.raw(
      `INSERT INTO cache_generations (scope, generation) VALUES ${scopeList.map(() => "(?, 1)").join(", ")}
       ON CONFLICT (scope) DO UPDATE SET generation = cache_generations.generation + 1`,
      scopeList,
    );
  }
  await deleteWhereIn(trx, "cache_voice_models", "user_id", inv.modelUsers);
  await deleteWhereIn(trx, "cache_voice_analytics", "user_id", inv.analyticsUsers);
  await deleteWhereIn(trx, "cache_voice_stats", "model_id", inv.statsModels);
}

async function deleteWhereIn(db: Db, table: CacheTable, column: string, values: Iterable<string> | undefined) {
  const list = [...new Set(values ?? [])];
  if (list.length > 0) await db(table).whereIn(column, list).delete();
}
