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
 *
 * The V8 heap has the same habit at rest: after a busy spell it stays committed at its peak
 * (about 190 MB with some 60 MB live after 10,000 calls here, still so 30 s later), because V8
 * collects by allocation and an idle server allocates nothing. So once a whole interval passed
 * with no call in flight and none ended, and the heap stands a quarter of the threshold above
 * what the last collection left, one compacting collection runs: without compaction the live
 * objects stay spread over the pages and V8 keeps them all (committed heap 185 MB for 66 MB live
 * here); compacted, the heap went to 99 MB and RSS from about 350 to 275 MB. It pauses longer
 * (about 100 ms here) but runs only at rest, once per busy spell.
 */
export function startMemoryReclaim(options: MemoryReclaimOptions): { stop(): void } {
  const collect = fullCollection();
  if (!collect || options.thresholdBytes <= 0) return { stop() {} };
  const { thresholdBytes } = options;
  const heapThreshold = thresholdBytes / 4;
  const start = process.memoryUsage();
  let heapFloor = start.heapTotal;
  let after = start.arrayBuffers;
  let floor = after;
  let before: number | undefined;
  let collectedIdle = false;
  let endedAtLast = options.endedCalls();
  let endedAtTick = endedAtLast;
  let spacingMs = MIN_SPACING_MS;
  let nextAllowed = 0;
  const timer = setInterval(() => {
    const { arrayBuffers: level, heapTotal } = process.memoryUsage();
    if (before !== undefined) {
      heapFloor = heapTotal;
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
    const quiet = idle && ended === endedAtTick;
    endedAtTick = ended;
    const garbageLikely = ended > endedAtLast && level - floor >= thresholdBytes;
    const heapAtRest = quiet && ended > endedAtLast && heapTotal - heapFloor >= heapThreshold;
    const due = heapAtRest || (idle && garbageLikely) || (now >= nextAllowed && (garbageLikely || level - after >= thresholdBytes));
    if (!due) return;
    const started = performance.now();
    collect(heapAtRest);
    options.log.info(
      { arrayBuffersMb: Math.round(level / 2 ** 20), heapMb: Math.round(heapTotal / 2 ** 20), pauseMs: Math.round(performance.now() - started) },
      heapAtRest ? "full garbage collection: heap left at its peak by calls that have ended" : "full garbage collection: buffer memory grew",
    );
    before = level;
    collectedIdle = idle;
    endedAtLast = ended;
    nextAllowed = now + spacingMs;
  }, options.intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}

/**
 * V8's full collection, compacting the heap when asked. Node offers it only behind --expose-gc;
 * the flag set at run time exposes `gc` in contexts made after it (as jest-leak-detector does).
 * Compaction is V8's flag for the one collection only.
 */
function fullCollection(): ((compact: boolean) => void) | undefined {
  let gc: unknown = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== "function") {
    try {
      v8.setFlagsFromString("--expose-gc");
      gc = vm.runInNewContext("gc");
    } catch {
      return undefined;
    }
  }
  if (typeof gc !== "function") return undefined;
  const collect = gc as () => void;
  return (compact) => {
    if (!compact) return collect();
    v8.setFlagsFromString("--compact-on-every-full-gc");
    try {
      collect();
    } finally {
      v8.setFlagsFromString("--no-compact-on-every-full-gc");
    }
  };
}
