import type { Knex } from "knex";
import type { GovernanceConfig, RateLimit } from "../config";
import { inTransaction } from "../db/transaction";

export type RateLimitedOperation = "create" | "update" | "analytics" | "backup";

export type Reservation =
  | { granted: true; /** Gives the slot back (the call turned out invalid). */ release(): Promise<void> }
  | { granted: false; retryAfterSeconds: number; limit: RateLimit };

/** Sliding-window limits per user and operation, counted in PostgreSQL so they hold fleet-wide. */
export interface RateLimiter {
  reserve(userId: string, operation: RateLimitedOperation): Promise<Reservation>;
}

/**
 * One row per counted call in rate_limit_hits. A reservation takes a transaction-scoped advisory
 * lock on (user, operation), so concurrent calls on any instance count one after another and the
 * limit is exact; rows older than the window are dropped on the way.
 */
export class PostgresRateLimiter implements RateLimiter {
  constructor(
    private readonly knex: Knex,
    private readonly limits: GovernanceConfig["rateLimits"],
  ) {}

  async reserve(userId: string, operation: RateLimitedOperation): Promise<Reservation> {
    const limit: RateLimit = this.limits[operation];
    return inTransaction(this.knex, async (trx) => {
      await trx.raw(`SELECT pg_advisory_xact_lock(hashtextextended(?, 0))`, [`rate:${operation}:${userId}`]);
      await trx.raw(`DELETE FROM rate_limit_hits WHERE user_id = ? AND operation = ? AND at <= now() - make_interval(secs => ?)`, [
        userId,
        operation,
        limit.windowSeconds,
      ]);
      const { rows } = await trx.raw(
        `SELECT count(*)::int AS used,
                ceil(extract(epoch FROM min(at) + make_interval(secs => ?) - now()))::int AS retry_after
           FROM rate_limit_hits WHERE user_id = ? AND operation = ?`,
        [limit.windowSeconds, userId, operation],
      );
      const { used, retry_after: retryAfter } = rows[0] as { used: number; retry_after: number | null };
      if (used >= limit.limit) return { granted: false as const, retryAfterSeconds: Math.max(1, retryAfter ?? limit.windowSeconds), limit };
      const [inserted] = await trx("rate_limit_hits").insert({ user_id: userId, operation, at: trx.raw("now()") }).returning("id");
      const id = (inserted as { id: number }).id;
      return {
        granted: true as const,
        release: async () => {
          await this.knex("rate_limit_hits").where("id", id).delete();
        },
      };
    });
  }
}
