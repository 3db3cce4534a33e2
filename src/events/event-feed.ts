import type { Knex } from "knex";
import type { Logger } from "pino";
import type { AppError } from "../errors";
import { eventsAfter, newestEventId, type StoredEvent } from "./event-repository";

/** Events a watcher holds in memory before it falls back to reading the table itself. */
export const WATCHER_QUEUE_MAX = 256;
/** Rows one read of the table returns. */
export const EVENT_PAGE = 200;

/** One open stream's side of the feed: a bounded queue, or a note that it must read the table. */
export class Watcher {
  queue: StoredEvent[] = [];
  /** Events may have been dropped (queue full, feed read failed): read the table from the cursor. */
  mustCatchUp = true;
  ended: AppError | undefined;
  private wakeUp: (() => void) | undefined;

  offer(event: StoredEvent): void {
    if (this.mustCatchUp) return;
    if (this.queue.length >= WATCHER_QUEUE_MAX) this.fallBehind();
    else this.queue.push(event);
    this.wake();
  }

  fallBehind(): void {
    this.mustCatchUp = true;
    this.queue = [];
    this.wake();
  }

  end(reason: AppError): void {
    this.ended = reason;
    this.wake();
  }

  /** Resolves at the next offer, fall-back or end, or after ms; true if something came. */
  next(ms: number, signal: AbortSignal): Promise<boolean> {
    if (this.queue.length > 0 || this.mustCatchUp || this.ended || signal.aborted) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (woken: boolean) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        this.wakeUp = undefined;
        resolve(woken);
      };
      const onAbort = () => done(true);
      const timer = setTimeout(() => done(false), ms);
      signal.addEventListener("abort", onAbort, { once: true });
      this.wakeUp = () => done(true);
    });
  }

  private wake() {
    this.wakeUp?.();
  }
}

/**
 * This instance's one reader of the outbox: woken after a local commit or by NOTIFY, it reads the
 * events after the last one it dispatched and offers each to every open watcher. No timer polls
 * the table; while no stream is open, wakes are ignored and nothing is read.
 */
export class EventFeed {
  private readonly watchers = new Set<Watcher>();
  /** The id up to which events were offered; undefined while no watcher is open. */
  private position: bigint | undefined;
  private reading: Promise<void> | undefined;
  private again = false;
  private retry: NodeJS.Timeout | undefined;

  constructor(
    private readonly knex: Knex,
    private readonly log: Logger,
  ) {}

  /**
   * Opens a watcher. Resolves once the feed offers it every event committed after this call
   * returns; the watcher starts by reading the table (mustCatchUp) for everything before.
   */
  async join(watcher: Watcher): Promise<void> {
    if (this.position === undefined) {
      const newest = await newestEventId(this.knex);
      // Another join may have set it meanwhile (then it is at least as far).
      this.position ??= newest;
    }
    this.watchers.add(watcher);
  }

  leave(watcher: Watcher): void {
    this.watchers.delete(watcher);
    if (this.watchers.size === 0 && !this.reading) this.position = undefined;
  }

  /** Events committed (here or, through NOTIFY, elsewhere): read and offer them. */
  readonly wake = (): void => {
    if (this.position === undefined) return;
    if (this.reading) {
      this.again = true;
      return;
    }
    this.reading = this.drain().finally(() => {
      this.reading = undefined;
      if (this.watchers.size === 0) this.position = undefined;
    });
  };

  private async drain(): Promise<void> {
    try {
      do {
        this.again = false;
        for (;;) {
          if (this.position === undefined) return;
          const events = await eventsAfter(this.knex, this.position, { kind: "all" }, EVENT_PAGE);
          for (const event of events) {
            this.position = event.id;
            for (const watcher of this.watchers) watcher.offer(event);
          }
          if (events.length < EVENT_PAGE) break;
        }
      } while (this.again);
    } catch (error) {
      // Nothing was offered past the position: the next read starts there. Watchers waiting for
      // these events read the table themselves meanwhile.
      this.log.warn({ err: error }, "reading change events failed; retrying");
      for (const watcher of this.watchers) watcher.fallBehind();
      clearTimeout(this.retry);
      this.retry = setTimeout(this.wake, 1_000);
      this.retry.unref();
    }
  }

  /** Ends every open stream (the instance is stopping). */
  close(reason: AppError): void {
    clearTimeout(this.retry);
    for (const watcher of this.watchers) watcher.end(reason);
  }
}
