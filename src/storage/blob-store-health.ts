import type { Logger } from "pino";
import type { BlobStore } from "./blob-store";

export type BlobStoreStatus = "unknown" | "up" | "down";

export interface BlobStoreState {
  status: BlobStoreStatus;
  /** When the last probe (or failed call) told us. */
  checkedAt: string | undefined;
  /** Why it is down. */
  error?: string;
}

// Never written: a stat of an absent key is the cheapest call that reaches the store.
const PROBE_KEY = ".health/probe";

/**
 * The blob store's health from a periodic probe, cached: readers (/readyz's body, gRPC health,
 * the metric) never wait on the store. A call that fails as STORAGE_UNAVAILABLE marks it down at
 * once; only a probe marks it up again. It never decides readiness: the hot path does not touch
 * the store, so a storage outage must not take instances out of the load balancer.
 */
export class BlobStoreHealth {
  private current: BlobStoreState = { status: "unknown", checkedAt: undefined };
  private timer: NodeJS.Timeout | undefined;
  private readonly listeners: ((state: BlobStoreState) => void)[] = [];

  constructor(
    private readonly store: BlobStore,
    private readonly intervalMs: number,
    private readonly log: Logger,
  ) {}

  get state(): BlobStoreState {
    return this.current;
  }

  onChange(listener: (state: BlobStoreState) => void): void {
    this.listeners.push(listener);
    listener(this.current);
  }

  markDown(error: Error): void {
    this.set({ status: "down", checkedAt: new Date().toISOString(), error: error.message });
  }

  async probe(): Promise<BlobStoreState> {
    try {
      await this.store.stat(PROBE_KEY);
      this.set({ status: "up", checkedAt: new Date().toISOString() });
    } catch (error) {
      this.markDown(error as Error);
    }
    return this.current;
  }

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.probe().finally(() => {
        if (this.timer) this.timer = setTimeout(tick, this.intervalMs).unref();
      });
    };
    this.timer = setTimeout(tick, 0).unref();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private set(next: BlobStoreState) {
    const changed = next.status !== this.current.status;
    this.current = next;
    if (!changed) return;
    if (next.status === "down") this.log.warn({ blobStore: next }, "blob store unavailable");
    else this.log.info({ blobStore: next }, "blob store available");
    for (const listener of this.listeners) listener(next);
  }
}
