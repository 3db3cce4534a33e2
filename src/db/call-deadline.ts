import type { Knex } from "knex";
import { AppError } from "../errors";

export const deadlineExceeded = () =>
  new AppError("DEADLINE_EXCEEDED", "the call's deadline passed before it finished; nothing it had not committed by then was kept");

/** Where a transaction's client keeps the deadline of the call that opened it. */
const DEADLINE = Symbol("call deadline");

type DeadlineCarrier = { [DEADLINE]?: number };

/**
 * Binds a call's deadline (epoch ms) to one of its transactions: from then on no statement of it
 * starts once the deadline has passed, and its COMMIT becomes a ROLLBACK. Carried on the
 * transaction rather than along the call's async chain (AsyncLocalStorage): with that on, every
 * promise and callback in the process paid for the store's propagation, a sixth of a cached
 * read's CPU.
 */
export function bindDeadline(trx: Knex.Transaction, deadlineMs: number | undefined): void {
  if (deadlineMs !== undefined && Number.isFinite(deadlineMs)) (trx.client as unknown as DeadlineCarrier)[DEADLINE] = deadlineMs;
}

type QueryObject = { sql?: string };
type ClientClass = new (...args: any[]) => { _query(connection: unknown, obj: QueryObject): Promise<unknown> };

/**
 * A knex client whose transactions honour the deadline bound to them (bindDeadline): once it has
 * passed, no statement starts (so the call's writes stop) and a COMMIT becomes a ROLLBACK, so a
 * write is kept only if it committed before the deadline. A ROLLBACK always goes through.
 * Knex builds each transaction's client from this class's prototype, so transactions get it.
 */
export function withCallDeadlines<C extends ClientClass>(Base: C): C {
  return class extends Base {
    override async _query(connection: unknown, obj: QueryObject) {
      const deadline = (this as DeadlineCarrier)[DEADLINE];
      if (deadline === undefined || Date.now() < deadline || /^\s*ROLLBACK\b/i.test(obj.sql ?? "")) return super._query(connection, obj);
      // A savepoint's RELEASE is refused like any statement: knex then rolls back to the savepoint.
      if (/^\s*COMMIT\b/i.test(obj.sql ?? "")) await super._query(connection, { ...obj, sql: "ROLLBACK" });
      throw deadlineExceeded();
    }
  };
}
