import { createCacheStats } from "../../src/cache/cache-stats";
import { UserReadCache } from "../../src/cache/user-read-cache";

/** A load that counts its calls and answers `value`. */
function loader<T>(value: T) {
  const load = Object.assign(async () => (load.calls++, value), { calls: 0 });
  return load;
}

describe("the in-process user read cache", () => {
  test("serves a filled slot until the user is invalidated, for every slot of that user", async () => {
    const stats = createCacheStats();
    const cache = new UserReadCache(100, stats, true);
    const active = loader("model-1");
    const page = loader(["model-1", "model-2"]);
    for (let i = 0; i < 3; i++) {
      expect(await cache.get("alice", "active", active)).toBe("model-1");
      expect(await cache.get("alice", "list:a", page)).toEqual(["model-1", "model-2"]);
    }
    expect([active.calls, page.calls]).toEqual([1, 1]);
    expect(stats.inProcess).toMatchObject({ hits: 4, misses: 2 });
    cache.invalidate("alice");
    await cache.get("alice", "active", active);
    await cache.get("alice", "list:a", page);
    expect([active.calls, page.calls]).toEqual([2, 2]);
  });

  test("holds at most maxEntries models by weight, dropping the least recently filled user", async () => {
    const stats = createCacheStats();
    const cache = new UserReadCache(10, stats, true);
    const pageOf = (n: number) => Array.from({ length: n }, (_, i) => `m${i}`);
    const weigh = (page: string[]) => page.length;
    await cache.get("alice", "list:a", loader(pageOf(4)), weigh);
    await cache.get("bob", "list:a", loader(pageOf(4)), weigh);
    // 8 held; carol's 4 make 12, so alice (filled first) goes, bob stays.
    await cache.get("carol", "list:a", loader(pageOf(4)), weigh);
    // Its accounted size, as /metrics shows it.
    expect(stats.inProcess).toMatchObject({ models: 8, users: 2 });
    const again = loader(pageOf(4));
    await cache.get("bob", "list:a", again, weigh);
    await cache.get("carol", "list:a", again, weigh);
    expect(again.calls).toBe(0);
    await cache.get("alice", "list:a", again, weigh);
    expect(again.calls).toBe(1);
    cache.invalidate("carol");
    expect(stats.inProcess).toMatchObject({ models: 4, users: 1 });
    cache.reset();
    expect(stats.inProcess).toMatchObject({ models: 0, users: 0 });
  });

  test("keeps at most 32 slots per user, the oldest out first", async () => {
    const cache = new UserReadCache(1_000, createCacheStats(), true);
    for (let i = 0; i <= 32; i++) await cache.get("alice", `list:${i}`, loader(i));
    const reload = loader(-1);
    expect(await cache.get("alice", "list:32", reload)).toBe(32);
    expect(await cache.get("alice", "list:0", reload)).toBe(-1);
  });

  test("a load in flight when its user is invalidated, or during a local write, does not fill", async () => {
    const cache = new UserReadCache(100, createCacheStats(), true);
    let release!: () => void;
    const slow = async () => {
      await new Promise<void>((r) => (release = r));
      return "old";
    };
    const pending = cache.get("alice", "active", slow);
    cache.invalidate("alice");
    release();
    expect(await pending).toBe("old");
    const fresh = loader("new");
    expect(await cache.get("alice", "active", fresh)).toBe("new");
    expect(fresh.calls).toBe(1);

    let commit!: () => void;
    cache.beginWrite(["alice"], new Promise<void>((r) => (commit = r)));
    const during = loader("during");
    await cache.get("alice", "active", during);
    await cache.get("alice", "active", during);
    expect(during.calls).toBe(2);
    commit();
    await new Promise((r) => setImmediate(r));
    const after = loader("after");
    await cache.get("alice", "active", after);
    await cache.get("alice", "active", after);
    expect(after.calls).toBe(1);
  });

  test("serves nothing while not live, and a reset drops everything", async () => {
    const cache = new UserReadCache(100, createCacheStats(), false);
    const load = loader("x");
    await cache.get("alice", "active", load);
    await cache.get("alice", "active", load);
    expect(load.calls).toBe(2);
    cache.setLive(true);
    await cache.get("alice", "active", load);
    await cache.get("alice", "active", load);
    expect(load.calls).toBe(3);
    cache.setLive(true);
    await cache.get("alice", "active", load);
    expect(load.calls).toBe(4);
  });
});
