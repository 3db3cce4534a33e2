// The fs blob store's disk fills up mid-upload (a real ENOSPC from a 1 MiB tmpfs): the upload is
// RESOURCE_EXHAUSTED / STORAGE_FULL, not INTERNAL; the model keeps the file it had, and no partial
// object is left behind.
import { Code, ConnectError } from "@connectrpc/connect";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describeIf } from "../helpers/env";
import { httpError } from "../helpers/expect-error";
import { createModel, startTestServer, type Actor, type TestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

const blobDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-disk-full-"));
// Mounting needs root (the CI container runs as root); elsewhere the suite says why it is skipped.
let mounted = false;
try {
  execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", blobDir], { stdio: "ignore" });
  mounted = true;
} catch {
  mounted = false;
}

describeIf(mounted, "needs root to mount a 1 MiB tmpfs")("a full disk under the fs blob store", () => {
  let server: TestServer;
  let user: Actor;

  beforeAll(async () => {
    server = await startTestServer({ env: { BLOB_DIR: blobDir, RATE_LIMIT_EXEMPT_ROLES: "admin,service,user" } });
    user = await server.actor();
  });

  afterAll(async () => {
    await server?.close();
    execFileSync("umount", [blobDir]);
    fs.rmSync(blobDir, { recursive: true, force: true });
  });

  const put = (modelId: string, body: Buffer) =>
    fetch(`${server.baseUrl}/v1/voice-models/${modelId}/file`, { method: "PUT", headers: { authorization: `Bearer ${user.token}` }, body });

  const read = async (modelId: string) => {
    const parts: Buffer[] = [];
    for await (const m of grpcStreamingClient(server.grpcPort, user.token).readModelFile({ modelId })) parts.push(Buffer.from(m.chunk));
    return Buffer.concat(parts);
  };

  const partials = () => (fs.existsSync(path.join(blobDir, ".tmp")) ? fs.readdirSync(path.join(blobDir, ".tmp")) : []);

  test("an upload that does not fit is STORAGE_FULL; the model keeps its file; nothing partial remains", async () => {
    const model = await createModel(user);
    const small = randomBytes(100_000);
    expect((await put(model.id, small)).status).toBe(200);

    // Random bytes do not compress: 2 MiB cannot fit in what is left of 1 MiB.
    const reply = await put(model.id, randomBytes(2 * 1024 * 1024));
    expect(reply.status).toBe(429); // RESOURCE_EXHAUSTED on the HTTP mapping
    const body = httpError(await reply.json());
    expect(body?.errorInfo?.reason).toBe("STORAGE_FULL");
    expect(body?.message).toMatch(/no space left/);
    expect(reply.headers.get("retry-after")).toBeNull(); // waiting does not free a disk

    const error = await grpcStreamingClient(server.grpcPort, user.token)
      .uploadModelFile(
        (async function* () {
          yield { part: { case: "header" as const, value: { modelId: model.id } } };
          for (let i = 0; i < 8; i++) yield { part: { case: "chunk" as const, value: randomBytes(256 * 1024) } };
        })(),
      )
      .then(() => undefined, (e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.ResourceExhausted);

    expect((await read(model.id)).equals(small)).toBe(true);
    expect(partials()).toEqual([]);
    // The space the failed writes took is free again: a file that fits still uploads.
    const fits = randomBytes(300_000);
    expect((await put(model.id, fits)).status).toBe(200);
    expect((await read(model.id)).equals(fits)).toBe(true);
  }, 30_000);
});

if (!mounted) fs.rmSync(blobDir, { recursive: true, force: true });
