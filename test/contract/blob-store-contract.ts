import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { BlobNotFoundError, InvalidBlobKeyError, type BlobStore } from "../../src/storage/blob-store";

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

async function keysOf(store: BlobStore, prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const info of store.list(prefix)) keys.push(info.key);
  return keys.sort();
}

/**
 * The behaviour every BlobStore must have. Each backend's test file calls this with a factory
 * that returns a store over an empty namespace.
 */
export function blobStoreContract(name: string, open: () => Promise<BlobStore> | BlobStore) {
  describe(`BlobStore contract: ${name}`, () => {
    let store: BlobStore;
    // Each test works under its own random folder so tests never see each other's objects.
    let ns: string;
    beforeAll(async () => {
      store = await open();
    });
    beforeEach(() => {
      ns = `t${randomBytes(4).toString("hex")}`;
    });

    test("put then get returns the same bytes; stat reports size", async () => {
      const body = randomBytes(300_000);
      const { size } = await store.put(`${ns}/a/b.bin`, Readable.from([body.subarray(0, 1000), body.subarray(1000)]));
      expect(size).toBe(body.length);
      expect((await readAll(await store.get(`${ns}/a/b.bin`))).equals(body)).toBe(true);
      const info = await store.stat(`${ns}/a/b.bin`);
      expect(info?.size).toBe(body.length);
      expect(info!.updatedAt.getTime()).toBeGreaterThan(Date.now() - 600_000);
    });

    test("put accepts an async iterable and replaces an existing object", async () => {
      await store.put(`${ns}/x`, Readable.from([Buffer.from("first version")]));
      await store.put(
        `${ns}/x`,
        (async function* () {
          yield Buffer.from("second");
        })(),
      );
      expect((await readAll(await store.get(`${ns}/x`))).toString()).toBe("second");
    });

    test("empty objects", async () => {
      await store.put(`${ns}/empty`, Readable.from([]));
      expect((await store.stat(`${ns}/empty`))?.size).toBe(0);
      expect((await readAll(await store.get(`${ns}/empty`))).length).toBe(0);
    });

    test("byte ranges: inclusive end, open end, end past the object", async () => {
      const body = randomBytes(5000);
      await store.put(`${ns}/r`, Readable.from([body]));
      expect((await readAll(await store.get(`${ns}/r`, { start: 10, end: 19 }))).equals(body.subarray(10, 20))).toBe(true);
      expect((await readAll(await store.get(`${ns}/r`, { start: 4990 }))).equals(body.subarray(4990))).toBe(true);
      expect((await readAll(await store.get(`${ns}/r`, { start: 4000, end: 99_999 }))).equals(body.subarray(4000))).toBe(true);
      expect((await readAll(await store.get(`${ns}/r`, { end: 0 }))).equals(body.subarray(0, 1))).toBe(true);
    });

    test("missing objects: get and copy/move reject with BlobNotFoundError, stat is undefined, delete is fine", async () => {
      await expect(store.get(`${ns}/missing`)).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.copy(`${ns}/missing`, `${ns}/other`)).rejects.toBeInstanceOf(BlobNotFoundError);
      await expect(store.move(`${ns}/missing`, `${ns}/other`)).rejects.toBeInstanceOf(BlobNotFoundError);
      expect(await store.stat(`${ns}/missing`)).toBeUndefined();
      await store.delete(`${ns}/missing`);
    });

    test("list by prefix: folders and partial names, recursive, nothing outside", async () => {
      for (const key of ["u1/m1/f", "u1/m2/f", "u10/m1/f", "u2/m1/f", "u1file"]) {
        await store.put(`${ns}/${key}`, Readable.from([Buffer.from(key)]));
      }
      expect(await keysOf(store, `${ns}/u1/`)).toEqual([`${ns}/u1/m1/f`, `${ns}/u1/m2/f`]);
      expect(await keysOf(store, `${ns}/u1`)).toEqual([`${ns}/u1/m1/f`, `${ns}/u1/m2/f`, `${ns}/u10/m1/f`, `${ns}/u1file`]);
      expect(await keysOf(store, `${ns}/u1/m2`)).toEqual([`${ns}/u1/m2/f`]);
      expect(await keysOf(store, `${ns}/nothing/`)).toEqual([]);
      const sizes = [];
      for await (const info of store.list(`${ns}/u2/`)) sizes.push(info.size);
      expect(sizes).toEqual([Buffer.from("u2/m1/f").length]);
    });

    test("copy keeps the source; move removes it", async () => {
      await store.put(`${ns}/src`, Readable.from([Buffer.from("payload")]));
      await store.copy(`${ns}/src`, `${ns}/copied/one`);
      expect((await readAll(await store.get(`${ns}/copied/one`))).toString()).toBe("payload");
      expect(await store.stat(`${ns}/src`)).toBeDefined();
      await store.move(`${ns}/src`, `${ns}/deleted/u/src`);
      expect(await store.stat(`${ns}/src`)).toBeUndefined();
      expect((await readAll(await store.get(`${ns}/deleted/u/src`))).toString()).toBe("payload");
    });

    test("delete removes the object", async () => {
      await store.put(`${ns}/gone`, Readable.from([Buffer.from("x")]));
      await store.delete(`${ns}/gone`);
      expect(await store.stat(`${ns}/gone`)).toBeUndefined();
      expect(await keysOf(store, `${ns}/`)).toEqual([]);
    });

    test("a failed upload leaves no object", async () => {
      const failing = (async function* () {
        yield Buffer.alloc(1000, 1);
        throw new Error("client went away");
      })();
      await expect(store.put(`${ns}/partial`, failing)).rejects.toThrow("client went away");
      expect(await store.stat(`${ns}/partial`)).toBeUndefined();
    });

    test.each([
      ["../escape"],
      ["a/../../escape"],
      ["/absolute"],
      ["a//b"],
      ["a/./b"],
      ["a\\..\\b"],
      [""],
      ["a/\0b"],
    ])("refuses the unsafe key %j", async (key) => {
      await expect(store.put(key, Readable.from([Buffer.from("x")]))).rejects.toBeInstanceOf(InvalidBlobKeyError);
      await expect(store.get(key)).rejects.toBeInstanceOf(InvalidBlobKeyError);
    });
  });
}
