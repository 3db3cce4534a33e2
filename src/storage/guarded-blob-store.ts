import { Readable } from "node:stream";
import { AppError } from "../errors";
import { BlobNotFoundError, InvalidBlobKeyError, type BlobInfo, type BlobStore, type GetOptions } from "./blob-store";

/** How long a client is told to wait before retrying a call the blob store could not serve. */
export const STORAGE_RETRY_AFTER_SECONDS = 5;

export interface StorageTimeouts {
  /** Longest wait for the first byte of a reply: connecting, the reply's headers, a first chunk. */
  connectTimeoutMs: number;
  /** Longest time a transfer may make no progress. A transfer that progresses has no cap. */
  idleTimeoutMs: number;
}

export interface GuardedBlobStoreOptions extends StorageTimeouts {
  /** Told of every failure that made a call STORAGE_UNAVAILABLE (the health probe goes red at once). */
  onUnavailable?: (error: AppError) => void;
}

export const storageUnavailable = (detail: string) =>
  new AppError("STORAGE_UNAVAILABLE", `the blob store is unavailable (${detail}); retry later`, {
    retryAfterSeconds: STORAGE_RETRY_AFTER_SECONDS,
  });

/** Errors that mean the store itself failed, not the request: network, timeouts, 5xx, 408, 429. */
function isStoreFailure(error: unknown): boolean {
  const e = error as { code?: unknown; name?: unknown } | undefined;
  if (typeof e?.code === "number") return e.code >= 500 || e.code === 408 || e.code === 429;
  if (typeof e?.code === "string" && /^(E[A-Z]+|ERR_STREAM_PREMATURE_CLOSE|ABORT_ERR)$/.test(e.code)) return true;
  return e?.name === "FetchError" || e?.name === "GaxiosError" || e?.name === "AbortError";
}

function classify(error: unknown, what: string): unknown {
  if (error instanceof AppError || error instanceof BlobNotFoundError || error instanceof InvalidBlobKeyError) return error;
  if (!isStoreFailure(error)) return error;
  const reason = (error as { code?: unknown })?.code ?? (error as Error)?.message;
  return storageUnavailable(`${what} failed: ${String(reason)}`);
}

/** A timer that, once it fires, aborts a signal and rejects `tripped`; armed and disarmed as a transfer progresses. */
class Watchdog {
  readonly controller = new AbortController();
  readonly tripped: Promise<never>;
  private timer: NodeJS.Timeout | undefined;
  private fire!: (error: AppError) => void;

  constructor(private readonly what: string) {
    this.tripped = new Promise<never>((_, reject) => {
      this.fire = reject;
    });
    this.tripped.catch(() => {}); // observed by whoever races it
  }

  arm(ms: number, waitingFor: string) {
    this.disarm();
    this.timer = setTimeout(() => {
      const error = storageUnavailable(`${this.what}: no ${waitingFor} within ${ms} ms`);
      this.controller.abort(error);
      this.fire(error);
    }, ms);
    this.timer.unref?.();
  }

  disarm() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  get fired() {
    return this.controller.signal.aborted;
  }
}

/**
 * Puts a remote blob store's calls under a first-byte timeout and a no-progress timeout, and turns
 * its outages into STORAGE_UNAVAILABLE (with retry-after) instead of errors that look like
 * anything else. Waiting on the caller (a slow uploader or a slow reader) never counts.
 */
export class GuardedBlobStore implements BlobStore {
  constructor(
    private readonly inner: BlobStore,
    private readonly options: GuardedBlobStoreOptions,
  ) {}

  private fail(error: unknown, what: string): unknown {
    const classified = classify(error, what);
    if (classified instanceof AppError && classified.code === "STORAGE_UNAVAILABLE") this.options.onUnavailable?.(classified);
    return classified;
  }

  /** One request-reply call: the reply must come within ms. */
  private async call<T>(what: string, ms: number, run: () => Promise<T>): Promise<T> {
    const watchdog = new Watchdog(what);
    watchdog.arm(ms, "reply");
    try {
      return await Promise.race([run(), watchdog.tripped]);
    } catch (error) {
      throw this.fail(error, what);
    } finally {
      watchdog.disarm();
    }
  }

  async put(key: string, body: Readable | AsyncIterable<Uint8Array>): Promise<{ size: number }> {
    const { connectTimeoutMs, idleTimeoutMs } = this.options;
    const watchdog = new Watchdog(`writing ${key}`);
    // The store must take each chunk within the idle timeout; the wait for the caller's next
    // chunk is not timed. After the last chunk it has the idle timeout to confirm.
    const paced = async function* () {
      watchdog.disarm();
      for await (const chunk of body) {
        watchdog.arm(idleTimeoutMs, "progress");
        yield chunk;
        watchdog.disarm();
      }
      watchdog.arm(idleTimeoutMs, "confirmation");
    };
    watchdog.arm(connectTimeoutMs, "start");
    try {
      return await Promise.race([this.inner.put(key, Readable.from(paced(), { objectMode: false }), { signal: watchdog.controller.signal }), watchdog.tripped]);
    } catch (error) {
      throw this.fail(error, `writing ${key}`);
    } finally {
      watchdog.disarm();
    }
  }

  async get(key: string, options: GetOptions = {}): Promise<Readable> {
    const { connectTimeoutMs, idleTimeoutMs } = this.options;
    const what = `reading ${key}`;
    const stream = await this.call(what, connectTimeoutMs, () => this.inner.get(key, options));
    const fail = (error: unknown) => this.fail(error, what);
    // Pulled only when the reader wants more, so a slow reader never trips the timer.
    const paced = async function* () {
      const watchdog = new Watchdog(what);
      const chunks = stream[Symbol.asyncIterator]();
      let first = true;
      try {
        for (;;) {
          watchdog.arm(first ? connectTimeoutMs : idleTimeoutMs, first ? "first byte" : "progress");
          const next = await Promise.race([chunks.next(), watchdog.tripped]);
          watchdog.disarm();
          if (next.done) return;
          first = false;
          yield next.value as Uint8Array;
        }
      } catch (error) {
        throw fail(error);
      } finally {
        watchdog.disarm();
        if (!stream.destroyed) stream.destroy();
      }
    };
    return Readable.from(paced(), { objectMode: false });
  }

  stat(key: string): Promise<BlobInfo | undefined> {
    return this.call(`stat ${key}`, this.options.connectTimeoutMs, () => this.inner.stat(key));
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    const entries = this.inner.list(prefix)[Symbol.asyncIterator]();
    for (;;) {
      const next = await this.call(`listing ${prefix}`, this.options.connectTimeoutMs, () => entries.next());
      if (next.done) return;
      yield next.value;
    }
  }

  // Copies and moves are done by the store itself (a server-side rewrite): they get both allowances.
  copy(from: string, to: string): Promise<void> {
    return this.call(`copying ${from}`, this.options.connectTimeoutMs + this.options.idleTimeoutMs, () => this.inner.copy(from, to));
  }

  move(from: string, to: string): Promise<void> {
    return this.call(`moving ${from}`, this.options.connectTimeoutMs + this.options.idleTimeoutMs, () => this.inner.move(from, to));
  }

  delete(key: string): Promise<void> {
    return this.call(`deleting ${key}`, this.options.connectTimeoutMs, () => this.inner.delete(key));
  }
}
