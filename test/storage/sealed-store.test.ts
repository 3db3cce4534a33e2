import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { FsBlobStore } from "../../src/storage/fs-blob-store";
import { LocalKeyProvider } from "../../src/storage/key-provider";
import { SealedStore } from "../../src/storage/sealed-store";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "vm-sealed-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const blobs = new FsBlobStore(root);
const master = randomBytes(32);
// Small chunks so a few KB span many chunks.
const sealed = new SealedStore(blobs, new LocalKeyProvider([master]), 1000);

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of stream) parts.push(Buffer.from(part));
  return Buffer.concat(parts);
}

async function* pieces(body: Buffer, size = 777) {
  for (let i = 0; i < body.length; i += size) yield body.subarray(i, i + size);
}

const compressible = (n: number) => Buffer.from("voice model weights ".repeat(Math.ceil(n / 20)).slice(0, n));

test.each([
  ["random (stored uncompressed)", randomBytes(10_500), false],
  ["compressible (compressed)", compressible(10_500), true],
  ["exactly two chunks", randomBytes(2000), false],
  ["empty", Buffer.alloc(0), false],
])("round trip and byte ranges: %s", async (_name, body, compressed) => {
  const key = `u/${randomBytes(4).toString("hex")}`;
  const obj = await sealed.write(key, pieces(body));
  expect(obj.size).toBe(body.length);
  expect(obj.compressed).toBe(compressed);
  expect(obj.sha256).toBe(require("node:crypto").createHash("sha256").update(body).digest("hex"));
  const stored = fs.readFileSync(path.join(root, key));
  // Encrypted at rest: the plaintext never appears in the stored bytes.
  if (body.length >= 64) expect(stored.includes(body.subarray(100, 164))).toBe(false);
  expect((await readAll(await sealed.read(obj))).equals(body)).toBe(true);
  for (const [start, end] of [
    [0, 0],
    [0, 999],
    [999, 1000],
    [1500, 7321],
    [body.length - 1, body.length + 50],
  ]) {
    if (start < 0 || start >= body.length) continue;
    const got = await readAll(await sealed.read(obj, { start, end }));
    expect(got.equals(body.subarray(start, end + 1))).toBe(true);
  }
});

test("a flipped byte anywhere in the chunks fails the read and yields nothing after it", async () => {
  const body = randomBytes(5000);
  const obj = await sealed.write("u/flip", pieces(body));
  const file = path.join(root, obj.key);
  const original = fs.readFileSync(file);
  for (const at of [16 + 4 + 3, 2100, original.length - 40 - 16 - 30]) {
    const tampered = Buffer.from(original);
    tampered[at] ^= 0x01;
    fs.writeFileSync(file, tampered);
    await expect(readAll(await sealed.read(obj))).rejects.toThrow(/authentication|bad length|truncated/);
  }
  fs.writeFileSync(file, original);
  expect((await readAll(await sealed.read(obj))).equals(body)).toBe(true);
});

test("truncation and a dropped chunk are detected", async () => {
  const body = randomBytes(5000);
  const obj = await sealed.write("u/trunc", pieces(body));
  const file = path.join(root, obj.key);
  const original = fs.readFileSync(file);
  // Cut after the second chunk (16 header + 2 * (4 + 1000 + 16)).
  fs.writeFileSync(file, original.subarray(0, 16 + 2 * 1020));
  await expect(readAll(await sealed.read(obj))).rejects.toThrow(/truncated/);
  // Drop the second chunk: the third then sits at index 1 and fails authentication.
  fs.writeFileSync(file, Buffer.concat([original.subarray(0, 16 + 1020), original.subarray(16 + 2 * 1020)]));
  await expect(readAll(await sealed.read(obj))).rejects.toThrow(/authentication/);
});

test("a wrong or rotated-out master key cannot open the data key", async () => {
  const obj = await sealed.write("u/keys", pieces(randomBytes(100)));
  const other = new SealedStore(blobs, new LocalKeyProvider([randomBytes(32)]));
  await expect(other.read(obj)).rejects.toThrow(/not configured/);
  // After rotation the old key still unwraps (it stays configured as a previous key).
  const rotated = new SealedStore(blobs, new LocalKeyProvider([randomBytes(32), master]));
  expect((await readAll(await rotated.read(obj))).length).toBe(100);
});
