import type { Logger } from "pino";

export interface Periodic {
  /** Stops the timer and waits for a run in progress. */
  stop(): Promise<void>;
}

/** Runs fn every intervalMs, never two runs at once; a failed run is logged and retried next time. */
export function every(intervalMs: number, fn: () => Promise<unknown>, log: Logger, name: string): Periodic {
  let running: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (running) return;
    running = fn()
      .then(
        () => undefined,
        (error: Error) => log.warn({ err: error.message }, `${name} failed`),
      )
      .finally(() => (running = undefined));
  }, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
