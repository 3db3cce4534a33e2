import { Histogram, Registry } from "prom-client";
import { RpcStats } from "../../src/metrics/rpc-stats";

/** The lines of one metric family, without its HELP text (ours is worded for the service). */
async function family(registry: Registry, name: string): Promise<string[]> {
  const text = await registry.metrics();
  return text.split("\n").filter((line) => line.startsWith(name) || line === `# TYPE ${name} histogram`);
}

test("RpcStats prints the same histogram as prom-client's Histogram for the same observations", async () => {
  const ours = new Registry();
  const stats = new RpcStats(ours, { requests: "rpc_total", duration: "rpc_seconds" });
  const reference = new Registry();
  const histogram = new Histogram({
    name: "rpc_seconds",
    help: "reference",
    labelNames: ["method", "code"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [reference],
  });
  // Values on, between and beyond the bucket bounds.
  const observations: Array<[string, string, number]> = [
    ["whoAmI", "OK", 0.0004],
    ["whoAmI", "OK", 0.001],
    ["whoAmI", "OK", 0.02],
    ["getVoiceModel", "NOT_FOUND", 10],
    ["getVoiceModel", "NOT_FOUND", 12.5],
    ["getVoiceModel", "OK", 0.3],
  ];
  for (const [method, code, seconds] of observations) {
    stats.observe(method, code, seconds);
    histogram.observe({ method, code }, seconds);
  }
  const expected = await family(reference, "rpc_seconds");
  expect(expected.length).toBeGreaterThan(40);
  expect(await family(ours, "rpc_seconds")).toEqual(expected);

  const counts = (await ours.metrics()).split("\n").filter((line) => line.startsWith("rpc_total{"));
  expect(counts.sort()).toEqual([
    'rpc_total{method="getVoiceModel",code="NOT_FOUND"} 2',
    'rpc_total{method="getVoiceModel",code="OK"} 1',
    'rpc_total{method="whoAmI",code="OK"} 3',
  ]);
});
