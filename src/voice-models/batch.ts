import { AppError, atItem, invalidArgument, type ErrorCode } from "../errors";
import * as valid from "./validation";

/** Items one batch call may hold. */
export const BATCH_MAX_ITEMS = 100;

/** One item's result: what its single call returned, or the error it refused the item with. */
export type ItemOutcome<T> = { ok: true; value: T } | { ok: false; error: AppError };

// Failures that are no item's own: they end the whole call (the items after it would meet them too).
const FAULTS = new Set<ErrorCode>(["SERVICE_UNAVAILABLE", "DEADLINE_EXCEEDED", "SHUTTING_DOWN", "INTERNAL", "STORAGE_UNAVAILABLE"]);

/** An error the item's own single call would have answered with (a result, not the call's end). */
const isRefusal = (error: unknown): error is AppError => error instanceof AppError && !FAULTS.has(error.code);

/**
 * The model ids of a batch, checked before anything runs: 1 to 100 of them, each a UUID
 * (INVALID_ARGUMENT naming the list, or the item: `modelIds[3]`, `items[2].modelId`).
 */
export function batchModelIds(ids: readonly string[], field: string, idField?: string): string[] {
  if (ids.length === 0) throw invalidArgument(field, "must hold at least one item");
  if (ids.length > BATCH_MAX_ITEMS) throw invalidArgument(field, `must hold at most ${BATCH_MAX_ITEMS} items, got ${ids.length}`);
  return ids.map((id, i) => valid.modelId(id, idField ? `${field}[${i}].${idField}` : `${field}[${i}]`));
}

/**
 * Runs the items one after another. Each on its own (`allOrNothing` false: every item its own
 * single call): a refusal becomes that item's result and the next item runs. All or nothing
 * (inside the caller's one transaction): the first refusal fails the whole batch with that item's
 * error and its position (`itemIndex`), so the transaction rolls back. A fault ends the batch
 * either way (contention is retried by the transaction).
 */
export async function runItems<I, T>(items: readonly I[], allOrNothing: boolean, run: (item: I, index: number) => Promise<T>): Promise<ItemOutcome<T>[]> {
  const outcomes: ItemOutcome<T>[] = [];
  for (const [index, item] of items.entries()) {
    try {
      outcomes.push({ ok: true, value: await run(item, index) });
    } catch (error) {
      if (!isRefusal(error)) throw error;
      if (allOrNothing) throw atItem(error, index);
      outcomes.push({ ok: false, error });
    }
  }
  return outcomes;
}
