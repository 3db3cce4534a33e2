import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { FsBlobStore } from "../../src/storage/fs-blob-store";
import { blobStoreContract } from "./blob-store-contract";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "vm-fs-blobs-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

blobStoreContract("local file system", () => new FsBlobStore(root));

test("objects land under the root and never outside it", async () => {
  const store = new FsBlobStore(path.join(root, "inner"));
  await store.put("u/m/file", Readable.from([Buffer.from("x")]));
  expect(fs.existsSync(path.join(root, "inner", "u", "m", "file"))).toBe(true);
  await expect(store.put("../outside", Readable.from([Buffer.from("x")]))).rejects.toThrow();
  expect(fs.existsSync(path.join(root, "outside"))).toBe(false);
  // The partial-upload folder is not addressable as an object.
  await expect(store.get(".tmp/anything")).rejects.toThrow();
});
