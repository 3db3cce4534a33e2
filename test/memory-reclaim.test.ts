import pino from "pino";
import { startMemoryReclaim } from "../src/server/memory-reclaim";

interface LogLine {
  msg: string;
  heapMb?: number;
  time: number;
}

const MB = 2 ** 20;

async function until(ready: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("a heap left at its peak by calls that have ended is compacted once the server is at rest", async () => {
  const lines: LogLine[] = [];
  const log = pino({ level: "info" }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
  let ended = 0;
  let inFlight = 1;
  const reclaim = startMemoryReclaim({ thresholdBytes: 128 * MB, intervalMs: 50, endedCalls: () => ended, callsInFlight: () => inFlight, log });
  try {
    // A busy spell: a few objects kept of many made, so the survivors are spread over the pages.
    const survivors: object[] = [];
    let recent: object[] = [];
    for (let i = 0; i < 3_000_000; i++) {
      const o = { n: i, text: `call ${i}`, list: [i] };
      recent.push(o);
      if (i % 50 === 0) survivors.push(o);
      if (recent.length > 300_000) recent = [];
    }
    recent = [];
    const peak = process.memoryUsage().heapTotal;
    const restAt = Date.now();
    ended = 10_000;
    inFlight = 0;
    await until(() => lines.some((l) => l.msg.includes("heap left at its peak")), 5_000, "a collection at rest");
    const collection = lines.find((l) => l.msg.includes("heap left at its peak"))!;
    expect(collection.time).toBeGreaterThanOrEqual(restAt);
    const after = process.memoryUsage().heapTotal;
    expect((peak - after) / MB).toBeGreaterThan(32);
    expect(survivors).toHaveLength(60_000);
  } finally {
    reclaim.stop();
  }
});
