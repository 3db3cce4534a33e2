/**
 * Summarizes V8 .cpuprofile files (from BENCH_PROFILE=1 npm run bench): self time by package,
 * and the functions with the most self and inclusive time.
 *   npx tsx bench/profile-summary.ts .bench/profile/*.cpuprofile [--top 25] [--from S] [--to S] [--callers NAME]
 * --from S skips the first S seconds (start-up), --to S the rest after S seconds (one round of
 * a run, say); --callers NAME also prints the heaviest call
 * paths into functions named NAME.
 */
import { readFileSync } from "node:fs";
import path from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const ROOT = path.resolve(__dirname, "..");

function where(url: string): string {
  if (!url) return "";
  const file = url.replace(/^file:\/\//, "");
  const nm = file.lastIndexOf("node_modules/");
  if (nm >= 0) return file.slice(nm + "node_modules/".length);
  return file.startsWith(ROOT) ? path.relative(ROOT, file) : file;
}

function category(node: ProfileNode): string {
  const { functionName, url } = node.callFrame;
  if (!url) return functionName.startsWith("(") ? functionName : "(native/V8 builtins)";
  if (url.startsWith("node:")) return "node internals";
  const w = where(url);
  const m = /^(@[^/]+\/[^/]+|[^/]+)\//.exec(w);
  if (url.includes("node_modules/") && m) return m[1];
  return w.split("/")[0] + "/";
}

function summarize(file: string, top: number, fromSeconds: number, toSeconds: number, callersOf?: string) {
  const p = JSON.parse(readFileSync(file, "utf8")) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (n: ProfileNode) => `${n.callFrame.functionName || "(anonymous)"}  ${where(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;

  const paths = new Map<string, number>();
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const cats = new Map<string, number>();
  let total = 0;
  let idle = 0;
  let elapsed = 0;
  p.samples.forEach((id, i) => {
    const dt = p.timeDeltas[i] ?? 0;
    elapsed += dt;
    if (elapsed < fromSeconds * 1e6 || elapsed > toSeconds * 1e6) return;
    const node = byId.get(id)!;
    if (node.callFrame.functionName === "(idle)") {
      idle += dt;
      return;
    }
    total += dt;
    self.set(key(node), (self.get(key(node)) ?? 0) + dt);
    cats.set(category(node), (cats.get(category(node)) ?? 0) + dt);
    const seen = new Set<string>();
    const stack: string[] = [];
    for (let n: ProfileNode | undefined = node; n; n = byId.get(parent.get(n.id) ?? -1)) {
      const k = key(n);
      if (callersOf !== undefined) {
        if (stack.length === 0 ? n.callFrame.functionName === callersOf : stack.length < 12) stack.push(k);
      }
      if (n.callFrame.functionName === "(root)" || seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    }
    if (stack.length) paths.set(stack.join("\n      <- "), (paths.get(stack.join("\n      <- ")) ?? 0) + dt);
  });

  const pct = (v: number) => `${((100 * v) / total).toFixed(1).padStart(5)}%`;
  const list = (title: string, m: Map<string, number>, n: number) => {
    console.log(`\n${title}`);
    for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`  ${pct(v)}  ${k}`);
  };
  console.log(`${file}: ${(total / 1e6).toFixed(1)} s busy, ${(idle / 1e6).toFixed(1)} s idle`);
  list("self time by package", cats, 20);
  list("self time by function", self, top);
  list("inclusive time by function", inclusive, top);
  if (callersOf !== undefined) list(`heaviest paths into ${callersOf}`, paths, 5);
}

process.stdout.on("error", () => process.exit(0)); // e.g. piped into head
const args = process.argv.slice(2);
const topIndex = args.indexOf("--top");
const top = topIndex >= 0 ? Number(args.splice(topIndex, 2)[1]) : 25;
const fromIndex = args.indexOf("--from");
const from = fromIndex >= 0 ? Number(args.splice(fromIndex, 2)[1]) : 0;
const toIndex = args.indexOf("--to");
const to = toIndex >= 0 ? Number(args.splice(toIndex, 2)[1]) : Infinity;
const callersIndex = args.indexOf("--callers");
const callersOf = callersIndex >= 0 ? args.splice(callersIndex, 2)[1] : undefined;
for (const file of args) summarize(file, top, from, to, callersOf);
