import { Counter, type Registry } from "prom-client";

const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

interface Series {
  labels: { method: string; code: string };
  count: number;
  sum: number;
  /** Observations per bucket (not cumulative); the last slot is +Inf. */
  buckets: number[];
}

/**
 * RPC counts and latencies by method and code, kept in plain numbers and published to
 * Prometheus when /metrics is scraped. prom-client hashes and validates labels on every
 * observation, which showed as several percent of a cheap RPC's CPU; here a call costs one Map
 * lookup and a few additions. The exposition is what prom-client's Counter and Histogram print.
 */
export class RpcStats {
  /** By method, then code: no key string is built per call. */
  private readonly series = new Map<string, Map<string, Series>>();

  constructor(registry: Registry, names: { requests: string; duration: string }) {
    const all = () => [...this.series.values()].flatMap((byCode) => [...byCode.values()]);
    new Counter({
      name: names.requests,
      help: "RPCs handled, by method and status code (OK or the gRPC code name).",
      labelNames: ["method", "code"] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const s of all()) this.inc(s.labels, s.count);
      },
    });
    const duration = {
      name: names.duration,
      help: "RPC latency from admission to reply, by method and status code.",
      type: "histogram",
      aggregator: "sum",
    } as const;
    registry.registerMetric({
      ...duration,
      get: async () => ({ ...duration, values: all().flatMap((s) => histogramLines(names.duration, s)) }),
      reset: () => this.series.clear(),
    } as never);
  }

  observe(method: string, code: string, seconds: number): void {
    let byCode = this.series.get(method);
    if (!byCode) this.series.set(method, (byCode = new Map()));
    let s = byCode.get(code);
    if (!s) byCode.set(code, (s = { labels: { method, code }, count: 0, sum: 0, buckets: new Array(DURATION_BUCKETS.length + 1).fill(0) }));
    s.count++;
    s.sum += seconds;
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[i]) i++;
    s.buckets[i]++;
  }
}

function histogramLines(name: string, s: Series) {
  let cumulative = 0;
  const lines = DURATION_BUCKETS.map((le, i) => {
    cumulative += s.buckets[i];
    return { metricName: `${name}_bucket`, labels: { le, ...s.labels }, value: cumulative };
  });
  lines.push({ metricName: `${name}_bucket`, labels: { le: "+Inf" as never, ...s.labels }, value: s.count });
  return [
    ...lines,
    { metricName: `${name}_sum`, labels: s.labels, value: s.sum },
    { metricName: `${name}_count`, labels: s.labels, value: s.count },
  ];
}
