// A first start as a newcomer makes it: `npm start` in a terminal, GET / in a browser, and the
// process ending when the `npm start` process it was started by is told to stop.
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { openDatabase } from "../src/db/connection";
import { describeOnPglite, REPO_ROOT } from "./helpers/env";
import { useTestServer } from "./helpers/harness";
import { childEnv, killSpawned } from "./helpers/spawn";

const STARTUP_MS = 60_000;

describe("GET / answers an index of the HTTP routes", () => {
  const server = useTestServer();

  test("JSON by default, every link answers", async () => {
    const index = await server().fetch("/");
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toBe("application/json");
    const body = JSON.parse(index.text) as { links: Array<{ href: string }> };
    expect(body.links.map((l) => l.href)).toEqual(["/healthz", "/readyz", "/metrics", "/console/"]);
    for (const link of body.links) expect([link.href, (await server().fetch(link.href)).status]).toEqual([link.href, 200]);
  });

  test("HTML for a browser", async () => {
    const index = await server().fetch("/", { headers: { accept: "text/html,application/xhtml+xml" } });
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toMatch(/^text\/html/);
    expect(index.text).toContain('<a href="/metrics">');
  });
});

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | string>;
}

/** Runs a command with the embedded-mode environment, collecting stdout and stderr together. */
function launch(command: string, args: string[], dataDir: string): Started {
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env: childEnv({ DATA_DIR: dataDir, DATABASE_URL: undefined, JWT_SECRET: undefined }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (out += chunk));
  // "exit", not "close": a grandchild left behind would hold the pipes open.
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? -1)));
  return { child, output: () => out, exited };
}

async function waitFor<T>(what: string, probe: () => T | undefined, started: Started): Promise<T> {
  const deadline = Date.now() + STARTUP_MS;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (started.child.exitCode !== null || started.child.signalCode !== null) throw new Error(`exited before ${what}:\n${started.output()}`);
    if (Date.now() > deadline) throw new Error(`no ${what} within ${STARTUP_MS} ms:\n${started.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describeOnPglite("npm start", () => {
  let dataDir: string;
  const lockFile = () => path.join(dataDir, "pglite.lock");
  beforeAll(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-first-start-"));
  });
  afterAll(async () => {
    await killSpawned();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("a first start stays small; SIGTERM to the npm process stops the server and frees the data folder", async () => {
    const npm = launch("npm", ["start"], dataDir);
    let serverPid = 0;
    try {
      await waitFor("listening", () => (/"msg":"voice model service listening"/.test(npm.output()) ? true : undefined), npm);
      serverPid = Number(fs.readFileSync(lockFile(), "utf8"));
      expect(alive(serverPid)).toBe(true);
      // A first start creates the database in a child process: the server keeps none of initdb's
      // heap (in-process it held about 750 MB; a restarted server holds about 225 MB).
      const rssMb = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${serverPid}/status`, "utf8"))![1]) / 1024;
      expect(rssMb).toBeLessThan(450);
      npm.child.kill("SIGTERM");
      await npm.exited;
      // The server is not npm's child to wait for: poll its pid (from the lock file).
      await waitFor("the server's exit", () => (alive(serverPid) ? undefined : true), { ...npm, child: { exitCode: null, signalCode: null } as ChildProcess });
      expect(fs.existsSync(lockFile())).toBe(false);
      await waitFor("the last log line", () => (npm.output().includes('"msg":"stopped"') ? true : undefined), { ...npm, child: { exitCode: null, signalCode: null } as ChildProcess });
    } finally {
      if (npm.child.exitCode === null) npm.child.kill("SIGKILL");
      if (serverPid && alive(serverPid)) process.kill(serverPid, "SIGKILL");
    }
  }, STARTUP_MS * 2);

  // `script` gives the server a terminal as its stdout, as a person's shell does.
  const haveScript = fs.existsSync("/usr/bin/script");
  (haveScript ? test : test.skip)("in a terminal it prints where it listens, the data folder, how to get a token, the docs", async () => {
    const tty = launch("script", ["-qfec", "npm start", "/dev/null"], dataDir);
    let serverPid = 0;
    try {
      const banner = await waitFor("the banner", () => /Voice model service is running[\s\S]*Stop: /.exec(tty.output())?.[0], tty);
      serverPid = Number(fs.readFileSync(lockFile(), "utf8"));
      expect(banner).toContain(`embedded PGlite in ${path.resolve(dataDir)}`);
      expect(banner).toContain("npm run -s token -- alice");
      expect(banner).toContain("README.md");
      const http = /Connect JSON, gRPC-Web\s+(http:\/\/\S+)/.exec(banner)![1];
      const index = await fetch(`${http}/`);
      expect(index.status).toBe(200);
      expect(banner).toMatch(/gRPC \(h2c, reflection\)\s+127\.0\.0\.1:\d+/);
    } finally {
      if (serverPid && alive(serverPid)) process.kill(serverPid, "SIGTERM");
      await tty.exited;
    }
  }, STARTUP_MS * 2);
});

describeOnPglite("the embedded database's footprint", () => {
  test("PGlite runs with a 16 MB shared_buffers (its default 128 MB sits in the server's heap)", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-pglite-settings-"));
    const db = await openDatabase({ pgliteDir: dir });
    try {
      const { rows } = await db.knex.raw("SHOW shared_buffers");
      expect(rows[0].shared_buffers).toBe("16MB");
    } finally {
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
