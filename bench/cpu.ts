import { readdirSync, readFileSync } from "node:fs";
import os from "node:os";

/**
 * CPU accounting from /proc (Linux), so a run can say how much CPU the server under test spent
 * per request (robust to a busy machine) and how much CPU other work on the machine took.
 */
const TICK_MS = 10; // USER_HZ is 100 on Linux
const HAVE_PROC = os.platform() === "linux";

function statFields(pid: number | "self"): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    return text.slice(text.lastIndexOf(")") + 2).split(" "); // fields from 3 (state) on
  } catch {
    return undefined;
  }
}

/** utime + stime of one process (ms); with children, also its waited-for children's. */
export function processCpuMs(pid: number | "self", withChildren = false): number {
  const f = statFields(pid);
  if (!f) return 0;
  // after the slice, index 0 is field 3: utime is field 14 -> 11, stime 12, cutime 13, cstime 14
  const ticks = Number(f[11]) + Number(f[12]) + (withChildren ? Number(f[13]) + Number(f[14]) : 0);
  return ticks * TICK_MS;
}

/** PostgreSQL backends serving the bench database (their title names it: "postgres: ... user db host"). */
function postgresCpuMs(database: string): number {
  let total = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() !== "postgres") continue;
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(` ${database} `)) total += processCpuMs(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return total;
}

function systemBusyMs(): number {
  const [, ...v] = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = v.map(Number);
  return (user + nice + system + irq + softirq + (steal || 0)) * TICK_MS;
}

export interface CpuSnapshot {
  at: number;
  system: number;
  server: number;
  bench: number;
  postgres: number;
}

export function cpuSnapshot(serverPid: number | undefined, database: string): CpuSnapshot | undefined {
  if (!HAVE_PROC || serverPid === undefined) return undefined;
  return {
    at: Date.now(),
    system: systemBusyMs(),
    server: processCpuMs(serverPid),
    bench: processCpuMs("self", true), // this process plus its finished load generators
    postgres: postgresCpuMs(database),
  };
}

export interface CpuUse {
  /** CPU milliseconds the server under test used per 1,000 requests. */
  serverMsPer1k: number;
  /** Share of the machine (all cores) used by processes other than the bench, the server under test and the bench database's backends. */
  otherShare: number;
}

export function cpuUse(before: CpuSnapshot | undefined, after: CpuSnapshot | undefined, requests: number): CpuUse | undefined {
  if (!before || !after) return undefined;
  const wallMs = after.at - before.at;
  const ours = after.server - before.server + (after.bench - before.bench) + (after.postgres - before.postgres);
  const other = Math.max(0, after.system - before.system - ours);
  return {
    serverMsPer1k: ((after.server - before.server) / Math.max(1, requests)) * 1000,
    otherShare: other / (wallMs * os.cpus().length),
  };
}
