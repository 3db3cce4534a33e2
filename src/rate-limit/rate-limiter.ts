import type { Knex } from "knex";
import type { GovernanceConfig, RateLimit } from "../config";
import { inTransaction } from "../db/transaction";

export type RateLimitedOperation = "create" | "update" | "analytics" | "backup";

export type Reservation =
  | {
      granted: true;
      /** How many slots it holds. */
      slots: number;
      /** Gives `count` of its slots back (default all): the call or some of its items turned out invalid. */
      release(count?: number): Promise<void>;
    }
  | { granted: false; retryAfterSeconds: number; limit: RateLimit; /** Slots still free in the window. */ remaining: number };

/** Sliding-window limits per user and operation, counted in PostgreSQL so they hold fleet-wide. */
export interface RateLimiter {
  /** Takes `slots` slots (a batch's items; default 1), all or none. */
  reserve(userId: string, operation: RateLimitedOperation, slots?: number): Promise<Reservation>;
}

/**
 * One row per counted call (or batch item) in rate_limit_hits. A reservation takes a
 * transaction-scoped advisory lock on (user, operation), so concurrent calls on any instance count
 * one after another and the limit is exact; rows older than the window are dropped on the way.
 */
export class PostgresRateLimiter implements RateLimiter {
  constructor(
    private readonly knex: Knex,
    private readonly limits: GovernanceConfig["rateLimits"],
  ) {}

  async reserve(userId: string, operation: RateLimitedOperation, slots = 1): Promise<Reservation> {
    const limit: RateLimit = this.limits[operation];
    return inTransaction(this.knex, async (trx) => {
      await trx.raw(`SELECT pg_advisory_xact_lock(hashtextextended(?, 0))`, [`rate:${operation}:${userId}`]);
      await trx.raw(`DELETE FROM rate_limit_hits WHERE user_id = ? AND operation = ? AND at <= now() - make_interval(secs => ?)`, [
        userId,
        operation,
        limit.windowSeconds,
      ]);
      const { rows } = await trx.raw(`SELECT count(*)::int AS used FROM rate_limit_hits WHERE user_id = ? AND operation = ?`, [userId, operation]);
      const used = (rows[0] as { used: number }).used;
      if (used + slots > limit.limit) {
        // Enough slots are free once the (used + slots - limit) oldest hits have left the window;
        // a batch larger than the limit itself never fits (retry after a window, in smaller batches).
        const { rows: oldest } =
          slots > limit.limit
            ? { rows: [] }
            : await trx.raw(
                `SELECT ceil(extract(epoch FROM at + make_interval(secs => ?) - now()))::int AS retry_after
                   FROM rate_limit_hits WHERE user_id = ? AND operation = ? ORDER BY at, id OFFSET ? LIMIT 1`,
                [limit.windowSeconds, userId, operation, used + slots - limit.limit - 1],
              );
        const retryAfter = (oldest[0] as { retry_after: number } | undefined)?.retry_after;
        return {
          granted: false as const,
          retryAfterSeconds: Math.max(1, retryAfter ?? limit.windowSeconds),
          limit,
          remaining: Math.max(0, limit.limit - used),
        };
      }
      const inserted = await trx("rate_limit_hits")
        .insert(Array.from({ length: slots }, () => ({ user_id: userId, operation, at: trx.raw("now()") })))
        .returning("id");
      const ids = (inserted as Array<{ id: number }>).map((row) => row.id);
      return {
        granted: true as const,
        slots,
        release: async (count = ids.length) => {
          const given = ids.splice(ids.length - Math.min(count, ids.length));
          if (given.length > 0) await this.knex("rate_limit_hits").whereIn("id", given).delete();
        },
      };
      // Writes only rate_limit_hits: no trigger needs the erasure key.
    }, { settings: false });
  }
}
