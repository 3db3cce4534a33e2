import { execFile } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * A PostgreSQL cluster of the test's own (initdb in a temp folder, a free port), for tests that
 * stop or restart the server: the shared one must never be stopped. PostgreSQL refuses to run as
 * root, so as root its commands run as the postgres OS user. Child processes are asynchronous so a
 * server in the same process keeps serving meanwhile.
 */
export class ThrowawayCluster {
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bindir: string,
  ) {}

  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database = "postgres", user = "postgres") {
    return `postgres://${user}@127.0.0.1:${this.port}/${database}`;
  }

  static async create(): Promise<ThrowawayCluster> {
    const { stdout } = await run("pg_config", ["--bindir"]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-pg-cluster-"));
    if (process.getuid?.() === 0) await run("chown", ["postgres:", dir]);
    const cluster = new ThrowawayCluster(dir, await freePort(), stdout.trim());
    await cluster.pg("initdb", ["-D", cluster.dataDir, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]);
    await cluster.start();
    return cluster;
  }

  private get dataDir() {
    return path.join(this.dir, "data");
  }

  private async pg(binary: string, args: string[]) {
    const command = path.join(this.bindir, binary);
    if (process.getuid?.() === 0) return run("runuser", ["-u", "postgres", "--", command, ...args], { cwd: this.dir });
    return run(command, args, { cwd: this.dir });
  }

  async start(): Promise<void> {
    // fsync off and a small footprint: the data is thrown away with the folder.
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=16MB -c max_connections=40`;
    await this.pg("pg_ctl", ["-D", this.dataDir, "-l", path.join(this.dir, "log"), "-o", options, "-w", "-t", "30", "start"]);
  }

  /**
   * Stops the server in the given mode. With wait false it returns as soon as the stop was
   * requested (smart mode then keeps serving open sessions and refuses new ones).
   */
  async stop(mode: "smart" | "fast" | "immediate", wait = true): Promise<void> {
    await this.pg("pg_ctl", ["-D", this.dataDir, "-m", mode, wait ? "-w" : "-W", "-t", "30", "stop"]);
  }

  async destroy(): Promise<void> {
    await this.stop("immediate").catch(() => {});
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
