import type { Logger } from "pino";
import v8 from "node:v8";
import vm from "node:vm";

export interface MemoryReclaimOptions {
  /** Buffer memory (ArrayBuffers) above what collections left that starts one. */
  thresholdBytes: number;
  /** How often the buffer memory is looked at. */
  intervalMs: number;
  /** Calls ended so far (a count that only grows). */
  endedCalls: () => number;
  /** Calls in flight now. */
  callsInFlight: () => number;
  log: Logger;
}

/** Collections that free little back off from this spacing up to the next. */
const MIN_SPACING_MS = 5_000;
const MAX_SPACING_MS = 60_000;

/**
 * Streams ended early (stalled readers, deadlines, clients gone) leave their file buffers
 * (decrypted 1 MiB chunks, read buffers) as garbage outside V8's heap, and V8 starts a full
 * collection by the growth of its own heap, not of those buffers: after 200 stalled file streams
 * were ended, a quiet server kept about 600 MB of them, and another such burst added to it.
 * So a full collection (10-70 ms here) runs when buffer memory has grown by `thresholdBytes` since
 * the last one, or stands that far above the lowest level a collection left while calls have
 * ended since (their buffers may be garbage). One that frees little doubles the wait before the
 * next, so streams that are alive and well do not make it run again and again. That wait does not
 * hold once no call is in flight: then buffers above the floor are garbage or held for good, so
 * one collection runs at once and what it leaves becomes the floor.
 */
export function startMemoryReclaim(options: MemoryReclaimOptions): { stop(): void } {
  const collect = fullCollection();
  if (!collect || options.thresholdBytes <= 0) return { stop() {} };
  const { thresholdBytes } = options;
  let after = process.memoryUsage().arrayBuffers;
  let floor = after;
  let before: number | undefined;
  let collectedIdle = false;
  let endedAtLast = options.endedCalls();
  let spacingMs = MIN_SPACING_MS;
  let nextAllowed = 0;
  const timer = setInterval(() => {
    const level = process.memoryUsage().arrayBuffers;
    if (before !== undefined) {
      // Buffers are freed after the collection itself: what it left shows a turn later.
      spacingMs = before - level >= thresholdBytes / 2 ? MIN_SPACING_MS : Math.min(spacingMs * 2, MAX_SPACING_MS);
      after = level;
      floor = collectedIdle ? level : Math.min(floor, level);
      before = undefined;
      return;
    }
    after = Math.min(after, level);
    const now = Date.now();
    const ended = options.endedCalls();
    const idle = options.callsInFlight() === 0;
    const garbageLikely = ended > endedAtLast && level - floor >= thresholdBytes;
    const due = (idle && garbageLikely) || (now >= nextAllowed && (garbageLikely || level - after >= thresholdBytes));
    if (!due) return;
    const started = performance.now();
    collect();
    options.log.info({ arrayBuffersMb: Math.round(level / 2 ** 20), pauseMs: Math.round(performance.now() - started) }, "full garbage collection: buffer memory grew");
    before = level;
    collectedIdle = idle;
    endedAtLast = ended;
    nextAllowed = now + spacingMs;
  }, options.intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * V8's full collection. Node offers it only behind --expose-gc; the flag set at run time exposes
 * `gc` in contexts made after it (as jest-leak-detector does).
 */
function fullCollection(): (() => void) | undefined {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (typeof exposed === "function") return exposed;
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc: unknown = vm.runInNewContext("gc");
    return typeof gc === "function" ? (gc as () => void) : undefined;
  } catch {
    return undefined;
  }
}
