import { randomUUID } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AppError } from "../errors";
import { BlobNotFoundError, checkKey, checkPrefix, InvalidBlobKeyError, type BlobInfo, type BlobStore, type GetOptions, type PutOptions } from "./blob-store";

// Partial uploads live here until renamed into place, so a reader never sees half a file.
const TMP_DIR = ".tmp";

const isDiskFull = (error: unknown) => ["ENOSPC", "EDQUOT"].includes((error as NodeJS.ErrnoException)?.code ?? "");

const storageFull = () =>
  new AppError("STORAGE_FULL", "the blob store has no space left; nothing was stored (an operator must free space)");

const isNotFound = (error: unknown) => ["ENOENT", "ENOTDIR"].includes((error as NodeJS.ErrnoException)?.code ?? "");

/** Objects as files under one root folder; keys are checked so a path can never leave it. */
export class FsBlobStore implements BlobStore {
  private readonly root: string;

  constructor(root: string) {
    // Folders are made on the first write, so a server that never stores a file leaves none.
    this.root = path.resolve(root);
  }

  private pathOf(key: string): string {
    checkKey(key);
    if (key === TMP_DIR || key.startsWith(`${TMP_DIR}/`)) throw new InvalidBlobKeyError(key, "reserved for partial uploads");
    const full = path.resolve(this.root, key);
    // checkKey already refuses '..'; this is the belt to its braces.
    if (!full.startsWith(this.root + path.sep)) throw new BlobNotFoundError(key);
    return full;
  }

  async put(key: string, body: Readable | AsyncIterable<Uint8Array>, options: PutOptions = {}): Promise<{ size: number }> {
    const target = this.pathOf(key);
    const tmp = path.join(this.root, TMP_DIR, randomUUID());
    let size = 0;
    const counted = async function* () {
      for await (const chunk of body) {
        size += chunk.length;
        yield chunk;
      }
    };
    try {
      await fsp.mkdir(path.dirname(tmp), { recursive: true });
      await pipeline(counted, fs.createWriteStream(tmp, { flags: "wx" }), { signal: options.signal });
      await fsp.mkdir(path.dirname(target), { recursive: true });
      await fsp.rename(tmp, target);
    } catch (error) {
      await fsp.rm(tmp, { force: true });
      if (isDiskFull(error)) throw storageFull();
      throw error;
    }
    return { size };
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const file = this.pathOf(key);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(file, "r");
    } catch (error) {
      if (isNotFound(error) || (error as NodeJS.ErrnoException).code === "EISDIR") throw new BlobNotFoundError(key);
      throw error;
    }
    const { size } = await handle.stat();
    const start = options.start ?? 0;
    const end = Math.min(options.end ?? size - 1, size - 1);
    if (end < start) {
      await handle.close();
      return Readable.from([]);
    }
    return handle.createReadStream({ start, end, autoClose: true, highWaterMark: 256 << 10 });
  }

  async stat(key: string): Promise<BlobInfo | undefined> {
    try {
      const s = await fsp.stat(this.pathOf(key));
      return s.isFile() ? { key, size: s.size, updatedAt: s.mtime } : undefined;
    } catch (error) {
      if (isNotFound(error) || error instanceof BlobNotFoundError) return undefined;
      throw error;
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    checkPrefix(prefix);
    // Walk only the folder the prefix names, then filter by the full prefix.
    const slash = prefix.lastIndexOf("/");
    const folder = slash < 0 ? "" : prefix.slice(0, slash);
    yield* this.walk(folder, prefix);
  }

  private async *walk(folder: string, prefix: string): AsyncIterable<BlobInfo> {
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(path.join(this.root, folder), { withFileTypes: true });
    } catch (error) {
      if (isNotFound(error)) return;
      throw error;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      const key = folder ? `${folder}/${entry.name}` : entry.name;
      if (key === TMP_DIR) continue;
      if (entry.isDirectory()) {
        if (key.startsWith(prefix) || prefix.startsWith(`${key}/`)) yield* this.walk(key, prefix);
      } else if (entry.isFile() && key.startsWith(prefix)) {
        const info = await this.stat(key);
        if (info) yield info;
      }
    }
  }

  async copy(from: string, to: string): Promise<void> {
    const source = await this.get(from);
    await this.put(to, source);
  }

  async move(from: string, to: string): Promise<void> {
    const source = this.pathOf(from);
    const target = this.pathOf(to);
    await fsp.mkdir(path.dirname(target), { recursive: true });
    try {
      await fsp.rename(source, target);
    } catch (error) {
      if (isNotFound(error)) {
        if (!(await this.stat(from))) throw new BlobNotFoundError(from);
      }
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await fsp.rm(this.pathOf(key), { force: true });
  }
}
