// The embedded mode as a person runs it: `npm start` on a data folder (PGlite on disk, a generated
// secret), `npm run token`, the data-folder lock, a graceful stop and a restart.
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { connectGrpc } from "./helpers/grpc-client";
import { describeOnPglite } from "./helpers/env";
import { killSpawned, runNpm, runScript, spawnServer, type SpawnedServer } from "./helpers/spawn";

// Starting tsx plus PGlite on disk takes seconds, and much longer on a loaded 2-core machine.
const STARTUP_MS = 90_000;

const embedded = (dataDir: string) => ({ DATA_DIR: dataDir, DATABASE_URL: undefined, JWT_SECRET: undefined });

/** A pid that belonged to a process that has ended. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""]);
  await new Promise((resolve) => child.once("exit", resolve));
  return child.pid!;
}

async function whoAmI(server: SpawnedServer, token: string) {
  const channel = connectGrpc(VoiceModelService, `127.0.0.1:${server.grpcPort}`);
  try {
    return (await channel.as(token).whoAmI({})).message;
  } finally {
    channel.close();
  }
}

describeOnPglite("embedded mode (PGlite data folder)", () => {
  let dataDir: string;
  beforeAll(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-embedded-"));
  });
  afterAll(async () => {
    await killSpawned();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test("npm run token needs only the secret file, never the database", async () => {
    const fresh = fs.mkdtempSync(path.join(os.tmpdir(), "vm-token-"));
    try {
      const result = await runNpm("token", ["alice", "--role", "admin"], embedded(fresh), STARTUP_MS);
      expect(result).toMatchObject({ code: 0, stderr: "" });
      expect(result.stdout.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
      // It created the secret, and nothing of the database.
      expect(fs.readdirSync(fresh).sort()).toEqual(["jwt-secret"]);
      expect((fs.statSync(path.join(fresh, "jwt-secret")).mode & 0o777).toString(8)).toBe("600");
    } finally {
      fs.rmSync(fresh, { recursive: true, force: true });
    }
  }, 120_000);

  test("npm run token refuses an unknown role", async () => {
    const result = await runScript(["src/auth/token-cli.ts", "alice", "--role", "root"], embedded(dataDir), STARTUP_MS);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/unknown role root/);
  }, 120_000);

  test("lock, token while running, graceful stop, stale lock take-over, data kept across restarts", async () => {
    const first = await spawnServer(embedded(dataDir), STARTUP_MS);
    const lockFile = path.join(dataDir, "pglite.lock");
    expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(first.pid));

    // A second process on the same folder exits non-zero with a clear message.
    const second = await runScript(["src/main.ts"], embedded(dataDir), STARTUP_MS);
    expect(second.code).not.toBe(0);
    expect(second.stderr).toContain(`in use by process ${first.pid}`);
    expect(second.stderr).toContain(dataDir);
    expect(second.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
    expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(first.pid));

    // npm run token works while the server holds the folder, and the server accepts its token.
    const minted = await runNpm("token", ["alice"], embedded(dataDir), STARTUP_MS);
    expect(minted.code).toBe(0);
    const token = minted.stdout.trim();
    expect(await whoAmI(first, token)).toMatchObject({ userId: "alice", roles: ["user"] });
    const adminToken = (await runNpm("token", ["ops", "--role", "admin"], embedded(dataDir), STARTUP_MS)).stdout.trim();
    expect((await whoAmI(first, adminToken)).roles).toEqual(["admin"]);

    const channel = connectGrpc(VoiceModelService, `127.0.0.1:${first.grpcPort}`);
    const created = (await channel.as(token).createVoiceModel({ provider: "xtts-v2", modelPath: "disk.pth", qualityScore: 0.7 })).message.model!;
    channel.close();

    // SIGTERM stops it gracefully and releases the lock.
    expect(await first.stop("SIGTERM")).toBe(0);
    expect(first.output().stdout).toContain('"msg":"stopped"');
    expect(fs.existsSync(lockFile)).toBe(false);

    // A lock left by a process that died is taken over.
    const dead = await deadPid();
    fs.writeFileSync(lockFile, String(dead));
    const restarted = await spawnServer(embedded(dataDir), STARTUP_MS);
    try {
      expect(fs.readFileSync(lockFile, "utf8").trim()).toBe(String(restarted.pid));
      // Same secret, same data.
      const again = connectGrpc(VoiceModelService, `127.0.0.1:${restarted.grpcPort}`);
      const active = (await again.as(token).getActiveVoiceModel({})).message.model;
      again.close();
      expect(active).toMatchObject({ id: created.id, qualityScore: 0.7, isActive: true });
    } finally {
      expect(await restarted.stop("SIGTERM")).toBe(0);
    }
  }, 300_000);
});
