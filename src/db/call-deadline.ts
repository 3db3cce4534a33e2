import { AsyncLocalStorage } from "node:async_hooks";
import { AppError } from "../errors";

/**
 * The deadline (epoch ms) of the call whose work is running, carried along its async chain so
 * every statement it sends can be checked against it without threading it through each layer.
 */
const deadlines = new AsyncLocalStorage<number>();

/** Runs fn with `deadlineMs` as its call's deadline; no deadline (undefined, Infinity) runs it as is. */
export function runWithDeadline<T>(deadlineMs: number | undefined, fn: () => T): T {
  return deadlineMs === undefined || !Number.isFinite(deadlineMs) ? fn() : deadlines.run(deadlineMs, fn);
}

/** Runs fn outside any call's deadline: work a call merely starts (background jobs) outlives it. */
export function outsideCall<T>(fn: () => T): T {
  return deadlines.exit(fn);
}

export const deadlineExceeded = () =>
  new AppError("DEADLINE_EXCEEDED", "the call's deadline passed before it finished; nothing it had not committed by then was kept");

type QueryObject = { sql?: string };
type ClientClass = new (...args: any[]) => { _query(connection: unknown, obj: QueryObject): Promise<unknown> };

/**
 * A knex client whose statements honour the deadline of the call that sends them: once it has
 * passed, no statement starts (so the call's work stops) and a COMMIT becomes a ROLLBACK, so a
 * write is kept only if it committed before the deadline. A ROLLBACK always goes through.
 * Knex builds each transaction's client from this class's prototype, so transactions get it too.
 */
export function withCallDeadlines<C extends ClientClass>(Base: C): C {
  return class extends Base {
    override async _query(connection: unknown, obj: QueryObject) {
      const deadline = deadlines.getStore();
      if (deadline === undefined || Date.now() < deadline || /^\s*ROLLBACK\b/i.test(obj.sql ?? "")) return super._query(connection, obj);
      // A savepoint's RELEASE is refused like any statement: knex then rolls back to the savepoint.
      if (/^\s*COMMIT\b/i.test(obj.sql ?? "")) await super._query(connection, { ...obj, sql: "ROLLBACK" });
      throw deadlineExceeded();
    }
  };
}
