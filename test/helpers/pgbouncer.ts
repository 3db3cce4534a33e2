import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

/** Where Debian's pgbouncer package puts the binary (or PGBOUNCER_PATH). */
export const PGBOUNCER_PATH = process.env.PGBOUNCER_PATH || "/usr/sbin/pgbouncer";
export const havePgbouncer = fs.existsSync(PGBOUNCER_PATH);

export interface Pgbouncer {
  readonly port: number;
  /** The URL of `database` through the pooler (same user and password as `upstream`). */
  url(database: string): string;
  /** A client on the admin console (SHOW CLIENTS, SHOW STATS, ...); the caller ends it. */
  admin(): Promise<pg.Client>;
  /** What pgbouncer logged so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

export interface PgbouncerOptions {
  /** The PostgreSQL every database name is forwarded to (host, port, user, password are used). */
  upstream: string;
  /** Server connections per database and user: fewer than the service's pool forces multiplexing. */
  poolSize?: number;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const quote = (value: string) => `'${value.replace(/'/g, "''")}'`;

/**
 * Starts its own PgBouncer in transaction pooling mode (temp config folder, free port, trust
 * authentication) forwarding every database name to `upstream`. PgBouncer refuses to run as
 * root, so under root it runs as the postgres OS user.
 */
export async function startPgbouncer(options: PgbouncerOptions): Promise<Pgbouncer> {
  const upstream = new URL(options.upstream);
  const user = decodeURIComponent(upstream.username || "postgres");
  const password = decodeURIComponent(upstream.password);
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-pgbouncer-"));
  const server = [`host=${upstream.hostname}`, `port=${upstream.port || "5432"}`, `user=${user}`, password && `password=${quote(password)}`]
    .filter(Boolean)
    .join(" ");
  fs.writeFileSync(path.join(dir, "userlist.txt"), `"${user}" ""\n`);
  fs.writeFileSync(
    path.join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `* = ${server}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${path.join(dir, "userlist.txt")}`,
      `admin_users = ${user}`,
      "pool_mode = transaction",
      `default_pool_size = ${options.poolSize ?? 4}`,
      "max_client_conn = 1000",
      "",
    ].join("\n"),
  );
  const root = process.getuid?.() === 0;
  if (root) {
    const uid = Number(execFileSync("id", ["-u", "postgres"]).toString());
    const gid = Number(execFileSync("id", ["-g", "postgres"]).toString());
    for (const file of ["", "userlist.txt", "pgbouncer.ini"]) fs.chownSync(path.join(dir, file), uid, gid);
  }
  const child: ChildProcess = spawn(PGBOUNCER_PATH, [...(root ? ["-u", "postgres"] : []), path.join(dir, "pgbouncer.ini")], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout!.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (log += chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));

  const url = (database: string) => {
    const through = new URL(options.upstream);
    through.hostname = "127.0.0.1";
    through.port = String(port);
    through.pathname = `/${database}`;
    return through.toString();
  };
  const bouncer: Pgbouncer = {
    port,
    url,
    async admin() {
      const client = new pg.Client({ connectionString: url("pgbouncer") });
      await client.connect();
      return client;
    },
    output: () => log,
    async stop() {
      // SIGTERM: immediate shutdown up to 1.22 (SIGINT waits for clients to leave).
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const killer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(killer);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };

  // Ready once the admin console answers.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}) at start:\n${log}`);
    try {
      const client = await bouncer.admin();
      await client.end();
      return bouncer;
    } catch (error) {
      if (Date.now() > deadline) {
        await bouncer.stop();
        throw new Error(`pgbouncer did not accept connections within 10 s: ${(error as Error).message}\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}
