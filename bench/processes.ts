import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from "node:child_process";
import { readFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";

/** A started child process with the tail of its output kept for error messages. */
export interface Child {
  name: string;
  proc: ChildProcess;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  exited: Promise<number | string>;
  output(): string;
}

const TAIL_CHARS = 8_000;

/**
 * Every process the bench starts goes through here, so all of them can be stopped, by pid,
 * whatever way the bench ends (normal end, error, Ctrl-C).
 */
export class Processes {
  private readonly running = new Set<Child>();

  start(name: string, command: string, args: string[], options: SpawnOptions = {}): Child {
    const proc = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
    let tail = "";
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString("utf8")).slice(-TAIL_CHARS);
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    const exited = new Promise<number | string>((resolve) => {
      proc.once("error", (error) => {
        keep(Buffer.from(`\n${name}: ${error.message}\n`));
        resolve(-1);
      });
      proc.once("close", (code, signal) => resolve(code ?? signal ?? -1));
    });
    const child: Child = { name, proc, exited, output: () => tail };
    this.running.add(child);
    void exited.then(() => this.running.delete(child));
    return child;
  }

  /** Runs a command to its end and returns its exit code and full stdout. */
  async run(name: string, command: string, args: string[]): Promise<{ code: number | string; stdout: string; stderr: string }> {
    const child = this.start(name, command, args);
    let stdout = "";
    let stderr = "";
    child.proc.stdout?.on("data", (c: Buffer) => (stdout += c.toString("utf8")));
    child.proc.stderr?.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
    const code = await child.exited;
    return { code, stdout, stderr };
  }

  /** SIGTERM to each running child, SIGKILL to those still alive after graceMs. */
  async stopAll(graceMs = 5_000): Promise<void> {
    const children = [...this.running];
    for (const c of children) signal(c, "SIGTERM");
    const timer = setTimeout(() => children.forEach((c) => signal(c, "SIGKILL")), graceMs);
    await Promise.all(children.map((c) => c.exited));
    clearTimeout(timer);
  }

  /** Last resort from a synchronous 'exit' handler. */
  killAllNow(): void {
    for (const c of this.running) signal(c, "SIGKILL");
  }
}

function signal(child: Child, sig: NodeJS.Signals) {
  if (child.proc.exitCode === null && child.proc.signalCode === null && child.proc.pid !== undefined) {
    try {
      process.kill(child.proc.pid, sig);
    } catch {
      // already gone
    }
  }
}

/** A port that was free a moment ago (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Retries probe until it resolves, the child exits, or timeoutMs passes. */
export async function waitUntilReady(child: Child, probe: () => Promise<unknown>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | string | undefined;
  void child.exited.then((code) => (exited = code));
  let lastError: unknown;
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new Error(`${child.name} exited (${exited}) before it was ready:\n${child.output()}`);
    try {
      await probe();
      return;
    } catch (error) {
      lastError = error;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`${child.name} not ready after ${timeoutMs} ms: ${(lastError as Error)?.message}\n${child.output()}`);
}

let built = false;

/**
 * The servers' command lines, compiled as production runs them (the Dockerfile's
 * `node dist/src/main.js`), once per bench run. Measured here: a bare grpc-js server run through
 * tsx spends about 15% more CPU per call than the same server compiled, so running either side
 * through tsx would skew every ratio.
 */
function build(root: string): void {
  if (built) return;
  const steps: string[][] = [
    ["npm", "run", "--silent", "build"],
    ["npx", "tsc", "bench/baseline-server.ts", "--outDir", ".bench/build", "--module", "commonjs", "--target", "es2022", "--esModuleInterop", "--skipLibCheck"],
    // The many-users load generator: compiled too, so its own CPU per call stays small.
    // And the connect-node baseline of (e), which needs the generated code as the generator does.
    ["npx", "tsc", "bench/users-load.ts", "bench/connect-baseline.ts", "--outDir", ".bench/build-load", "--module", "commonjs", "--target", "es2022", "--esModuleInterop", "--skipLibCheck"],
  ];
  for (const [command, ...args] of steps) {
    const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
    if (result.status !== 0) throw new Error(`${[command, ...args].join(" ")} failed; the bench measures compiled servers`);
  }
  built = true;
}

/** Our service: `node dist/src/main.js`. */
export function serviceArgs(root: string): string[] {
  build(root);
  return [path.join(root, "dist", "src", "main.js")];
}

/** The bare grpc-js baselines (bench/baseline-server.ts), compiled the same way. */
export function baselineArgs(root: string): string[] {
  build(root);
  return [path.join(root, ".bench", "build", "baseline-server.js")];
}

/** The bare connect-node baseline of (e) (bench/connect-baseline.ts), compiled the same way. */
export function connectBaselineArgs(root: string): string[] {
  build(root);
  return [path.join(root, ".bench", "build-load", "bench", "connect-baseline.js")];
}

/** The many-users load generator (bench/users-load.ts), compiled the same way. */
export function usersLoadArgs(root: string): string[] {
  build(root);
  return [path.join(root, ".bench", "build-load", "bench", "users-load.js")];
}

/** VmRSS of one process in MB (undefined once it is gone). */
export function rssMb(pid: number | undefined): number | undefined {
  try {
    const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb ? Number(kb) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** What a case that runs its own services on its own database gets from the run. */
export interface OwnDatabaseCase {
  procs: Processes;
  root: string;
  adminUrl: string;
  /** This case's own database. */
  dbName: string;
  keepDb: boolean;
  /** The JWT secret the services check and a service-role token signed with it. */
  secret: string;
  token: string;
  seconds: number;
  runs: number;
  workDir: string;
}
