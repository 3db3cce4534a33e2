import type { Knex } from "knex";
import { setTimeout as sleep } from "node:timers/promises";
import { bindDeadline, deadlineExceeded } from "./call-deadline";

/** The transaction type every multi-row write takes as a parameter. */
export type Tx = Knex.Transaction;
/** A connection or a transaction: what a read can run on. */
export type Db = Knex | Knex.Transaction;

// serialization_failure, deadlock_detected, and a unique violation of the one-active index
// (only possible if a writer skipped the owner lock): all safe to retry from the start.
const RETRYABLE_CODES = new Set(["40001", "40P01"]);
const RETRYABLE_CONSTRAINTS = new Set(["voice_models_one_active_per_user"]);

function isRetryable(error: unknown): boolean {
  const e = error as { code?: string; constraint?: string };
  if (e?.code && RETRYABLE_CODES.has(e.code)) return true;
  return e?.code === "23505" && e.constraint !== undefined && RETRYABLE_CONSTRAINTS.has(e.constraint);
}

// Settings every writing transaction of a database hands to its triggers (the erasure key), set
// transaction-locally: a pooler may give the next transaction another server connection.
const transactionSettings = new WeakMap<Knex, { sql: string; bindings: string[] }>();

/** Sets `name` to `value` (transaction-local) at the start of every transaction opened here on knex. */
export function setTransactionSetting(knex: Knex, name: string, value: string): void {
  transactionSettings.set(knex, { sql: "SELECT set_config(?, ?, true)", bindings: [name, value] });
}

/** Applies the settings of setTransactionSetting to a transaction opened elsewhere (knex.transaction). */
export async function applyTransactionSettings(knex: Knex, trx: Tx): Promise<void> {
  const settings = transactionSettings.get(knex);
  if (settings) await trx.raw(settings.sql, settings.bindings);
}

export interface TransactionOptions {
  attempts?: number;
  /**
   * false: skip the settings of setTransactionSetting (one round trip) in a transaction that
   * writes no table whose triggers read them (rate-limit hits, usage events). Default true.
   */
  settings?: boolean;
  /**
   * The deadline (epoch ms) of the call the transaction is for: it is not begun after it, none of
   * its statements starts after it, and it commits only before it (bindDeadline).
   */
  deadlineMs?: number;
}

/** Runs fn in one transaction, retrying contention failures so callers never see them. */
export async function inTransaction<T>(knex: Knex, fn: (trx: Tx) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const { attempts = 8, settings = true, deadlineMs } = options;
  for (let attempt = 1; ; attempt++) {
    if (deadlineMs !== undefined && Date.now() >= deadlineMs) throw deadlineExceeded();
    try {
      return await knex.transaction(async (trx) => {
        bindDeadline(trx, deadlineMs);
        if (settings) await applyTransactionSettings(knex, trx);
        return fn(trx);
      });
    } catch (error) {
      if (attempt >= attempts || !isRetryable(error)) throw error;
      await sleep(Math.random() * 5 * attempt);
    }
  }
}
