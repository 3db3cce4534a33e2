import { readAhead } from "../../src/storage/read-ahead";

/** A source that records how far it has been pulled, and whether it was closed. */
function source(items: number, failAt?: number) {
  const state = { produced: 0, closed: false };
  async function* gen() {
    try {
      for (let i = 0; i < items; i++) {
        await new Promise((r) => setImmediate(r));
        if (i === failAt) throw new Error(`item ${i} is corrupt`);
        state.produced++;
        yield i;
      }
    } finally {
      state.closed = true;
    }
  }
  return { state, items: gen() };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

test("yields every item in order while producing up to `depth` ahead of the consumer", async () => {
  const { state, items } = source(10);
  const seen: number[] = [];
  for await (const item of readAhead(items, 2)) {
    await settle();
    seen.push(item);
    // Holding the first item, nothing more is read (a reader that stalls at once costs one item);
    // from the second on, the source has produced n + 1 and 2 beyond it.
    expect(state.produced).toBeLessThanOrEqual(Math.min(10, item + 3));
    if (item === 0) expect(state.produced).toBe(1);
    else if (item < 7) expect(state.produced).toBe(item + 3);
  }
  expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test("a failure reaches the consumer after the items before it, never before", async () => {
  const { items } = source(10, 3);
  const seen: number[] = [];
  await expect(
    (async () => {
      for await (const item of readAhead(items, 2)) {
        await settle();
        seen.push(item);
      }
    })(),
  ).rejects.toThrow("item 3 is corrupt");
  expect(seen).toEqual([0, 1, 2]);
});

test("a consumer that stops early closes the source", async () => {
  const { state, items } = source(100);
  for await (const item of readAhead(items, 2)) if (item === 1) break;
  expect(state.closed).toBe(true);
  expect(state.produced).toBeLessThanOrEqual(4);
});
