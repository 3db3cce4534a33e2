import { spawn, type ChildProcess } from "node:child_process";
import { REPO_ROOT } from "./env";

/** A server running as its own process (`node --import tsx src/main.ts`). */
export interface SpawnedServer {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly grpcPort: number;
  readonly httpPort: number;
  /** Everything the process wrote so far. */
  output(): { stdout: string; stderr: string };
  /** Resolves with the exit code (or signal name) once the process has ended. */
  readonly exited: Promise<number | string>;
  /** Sends a signal (default SIGTERM) and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<number | string>;
}

export interface ProcessResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

const live = new Set<ChildProcess>();

/** The environment a child gets: ours without Jest's and the database's, plus the given settings. */
export function childEnv(env: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = { ...process.env };
  for (const key of ["NODE_OPTIONS", "DATABASE_URL", "DATA_DIR", "JWT_SECRET", "JWT_JWKS_URL", "PORT", "GRPC_PORT", "JEST_WORKER_ID"]) {
    delete base[key];
  }
  const merged: NodeJS.ProcessEnv = { ...base, HOST: "127.0.0.1", PORT: "0", GRPC_PORT: "0", LOG_LEVEL: "info", ...env };
  for (const [key, value] of Object.entries(merged)) if (value === undefined) delete merged[key];
  return merged;
}

function start(args: string[], env: Record<string, string | undefined>, command = process.execPath): ChildProcess {
  const child = spawn(command, command === process.execPath ? ["--import", "tsx", ...args] : args, {
    cwd: REPO_ROOT,
    env: childEnv(env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  child.once("exit", () => live.delete(child));
  return child;
}

function collect(child: ChildProcess) {
  const out = { stdout: "", stderr: "" };
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (out.stdout += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (out.stderr += chunk));
  const exited = new Promise<number | string>((resolve) => child.once("close", (code, signal) => resolve(code ?? signal ?? -1)));
  return { out, exited };
}

/**
 * Starts `src/main.ts` in a child process and waits for its "listening" log line, which names the
 * ports it bound (PORT and GRPC_PORT default to 0 here).
 */
export async function spawnServer(env: Record<string, string | undefined>, timeoutMs = 30_000): Promise<SpawnedServer> {
  const child = start(["src/main.ts"], env);
  const { out, exited } = collect(child);
  const ports = await new Promise<{ grpcPort: number; httpPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`server did not log "listening" within ${timeoutMs} ms\n${out.stdout}\n${out.stderr}`));
    }, timeoutMs);
    let buffered = "";
    const onData = (chunk: string) => {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        let entry: { msg?: string; grpcPort?: number; httpPort?: number };
        try {
          entry = JSON.parse(line);
        } catch {
          continue;
        }
        if (entry.msg?.includes("listening") && entry.grpcPort && entry.httpPort) {
          clearTimeout(timer);
          child.stdout!.off("data", onData);
          resolve({ grpcPort: entry.grpcPort, httpPort: entry.httpPort });
        }
      }
    };
    child.stdout!.on("data", onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before listening\n${out.stdout}\n${out.stderr}`));
    });
  });
  return {
    child,
    pid: child.pid!,
    ...ports,
    output: () => ({ ...out }),
    exited,
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs a TypeScript entry point (e.g. src/main.ts, src/auth/token-cli.ts) to its end. */
export async function runScript(args: string[], env: Record<string, string | undefined>, timeoutMs = 30_000): Promise<ProcessResult> {
  const child = start(args, env);
  const { out, exited } = collect(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await exited;
  clearTimeout(timer);
  return { code, ...out };
}

/** Runs an npm script the way a person would (`npm run --silent <script> -- args`). */
export async function runNpm(script: string, args: string[], env: Record<string, string | undefined>, timeoutMs = 30_000): Promise<ProcessResult> {
  const child = start(["run", "--silent", script, "--", ...args], env, "npm");
  const { out, exited } = collect(child);
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await exited;
  clearTimeout(timer);
  return { code, ...out };
}

/** Kills whatever child this helper started and is still running (for afterAll). */
export async function killSpawned(): Promise<void> {
  await Promise.all(
    [...live].map(
      (child) =>
        new Promise<void>((resolve) => {
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
}
