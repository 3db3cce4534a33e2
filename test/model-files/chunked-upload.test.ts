// The resumable upload in unary calls (StartModelFileUpload, AppendModelFileUpload,
// FinishModelFileUpload), over gRPC and Connect JSON, against the real server and database: the
// file it stores is the one UploadModelFile would, chunks resume and replay, sessions belong to
// their caller, and expiry, erasure and withdrawal leave no session row or staged object.
import { Code } from "@connectrpc/connect";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { sweepIdleUploads } from "../../src/model-files/chunked-upload";
import { FsBlobStore } from "../../src/storage/fs-blob-store";
import { expectRpcError } from "../helpers/expect-error";
import { createModel, sleep, startTestServer, TRANSPORTS, useTestServer, type Actor, type RpcOutcome, type TestServer, type Transport } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-chunked-"));
const blobRoot = path.join(dataDir, "blobs");
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const server = useTestServer({ env: { DATA_DIR: dataDir } });

const MIB = 1024 * 1024;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Every object key under the blob root with this prefix ('/'-separated). */
function storedKeys(prefix: string): string[] {
  const dir = path.join(blobRoot, prefix);
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((e) => fs.statSync(path.join(dir, e)).isFile())
    .map((e) => `${prefix}${e.split(path.sep).join("/")}`);
}
const stagedKeys = (userId: string) => storedKeys(`${userId}/uploads/`);

const sessionRows = async (uploadId: string) => ({
  sessions: Number((await server().db.knex("model_file_uploads").where({ id: uploadId }).count("* as n").first())!.n),
  chunks: Number((await server().db.knex("model_file_upload_chunks").where({ upload_id: uploadId }).count("* as n").first())!.n),
});

function ok(outcome: RpcOutcome): any {
  if (outcome.code !== 0) throw new Error(`call failed: ${Code[outcome.code]} ${outcome.errorInfo?.reason} ${outcome.errorMessage}`);
  return outcome.message;
}

async function start(t: Transport, actor: Actor, modelId: string, body: Buffer, declaredSha = sha(body)) {
  return ok(await server().call(t, "startModelFileUpload", { modelId, sizeBytes: BigInt(body.length), sha256: declaredSha }, actor.token)) as {
    uploadId: string;
    chunkBytes: number;
    receivedBytes: bigint;
  };
}
const append = (t: Transport, actor: Pick<Actor, "token">, uploadId: string, offset: number, data: Uint8Array) =>
  server().call(t, "appendModelFileUpload", { uploadId, offset: BigInt(offset), data }, actor.token);
const finish = (t: Transport, actor: Pick<Actor, "token">, uploadId: string) => server().call(t, "finishModelFileUpload", { uploadId }, actor.token);

async function readFile(actor: Pick<Actor, "token">, modelId: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of grpcStreamingClient(server().grpcPort, actor.token).readModelFile({ modelId })) parts.push(Buffer.from(m.chunk));
  return Buffer.concat(parts);
}

describe.each(TRANSPORTS)("over %s", (t) => {
  test("a file in 1 MiB appends round-trips: ReadModelFile returns the same bytes and SHA-256; the session and its staging are gone", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const body = randomBytes(2 * MIB + 12_345);
    const started = await start(t, alice, model.id, body);
    expect(started.chunkBytes).toBe(MIB);
    expect(started.receivedBytes).toBe(0n);
    for (let at = 0; at < body.length; at += started.chunkBytes) {
      const reply = ok(await append(t, alice, started.uploadId, at, body.subarray(at, at + started.chunkBytes)));
      expect(Number(reply.receivedBytes)).toBe(Math.min(body.length, at + started.chunkBytes));
    }
    expect(stagedKeys(alice.userId)).toHaveLength(3);
    // The staged bytes are sealed: no plaintext in the objects.
    const raw = fs.readFileSync(path.join(blobRoot, stagedKeys(alice.userId)[0]));
    expect(raw.includes(body.subarray(0, 64))).toBe(false);
    expect(raw.includes(body.subarray(MIB, MIB + 64))).toBe(false);

    const done = ok(await finish(t, alice, started.uploadId));
    expect(done.file.sha256).toBe(sha(body));
    expect(Number(done.file.sizeBytes)).toBe(body.length);
    expect(done.model.modelPath.startsWith(`${alice.userId}/${model.id}/`)).toBe(true);
    const read = await readFile(alice, model.id);
    expect(sha(read)).toBe(sha(body));
    expect(read.equals(body)).toBe(true);
    expect(await sessionRows(started.uploadId)).toEqual({ sessions: 0, chunks: 0 });
    expect(stagedKeys(alice.userId)).toEqual([]);
    // Finished: the id is gone.
    expectRpcError(await finish(t, alice, started.uploadId), { code: Code.NotFound, reason: "UPLOAD_NOT_FOUND", field: "uploadId" });
  });

  test("a re-sent chunk is idempotent, an out-of-order one names offset and where to resume; Start again resumes the same session", async () => {
    const bob = await server().actor();
    const model = await createModel(bob);
    const body = randomBytes(3 * 1000);
    const { uploadId } = await start(t, bob, model.id, body);
    const part = (i: number) => body.subarray(i * 1000, (i + 1) * 1000);
    expect(Number(ok(await append(t, bob, uploadId, 0, part(0))).receivedBytes)).toBe(1000);
    // The reply was lost, the client sends chunk 0 again: the same answer, nothing added.
    expect(Number(ok(await append(t, bob, uploadId, 0, part(0))).receivedBytes)).toBe(1000);
    // Chunk 2 before chunk 1.
    const early = await append(t, bob, uploadId, 2000, part(2));
    expectRpcError(early, { code: Code.FailedPrecondition, reason: "UPLOAD_OFFSET_MISMATCH", field: "offset", message: /1000 bytes received/ });
    expect(early.errorInfo!.metadata.receivedBytes).toBe("1000");
    // Other bytes at an offset already received are not a replay.
    const altered = Buffer.from(part(0));
    altered[0] ^= 1;
    expectRpcError(await append(t, bob, uploadId, 0, altered), { code: Code.FailedPrecondition, reason: "UPLOAD_OFFSET_MISMATCH", field: "offset" });
    // Nor is a part of a received chunk.
    expectRpcError(await append(t, bob, uploadId, 500, body.subarray(500, 1000)), { code: Code.FailedPrecondition, reason: "UPLOAD_OFFSET_MISMATCH", field: "offset" });
    // A reloaded page starts again with the same file: the same session, from where it stands.
    const again = await start(t, bob, model.id, body);
    expect(again.uploadId).toBe(uploadId);
    expect(again.receivedBytes).toBe(1000n);
    ok(await append(t, bob, uploadId, 1000, part(1)));
    ok(await append(t, bob, uploadId, 2000, part(2)));
    expect(await sessionRows(uploadId)).toEqual({ sessions: 1, chunks: 3 });
    expect(ok(await finish(t, bob, uploadId)).file.sha256).toBe(sha(body));
    expect((await readFile(bob, model.id)).equals(body)).toBe(true);
  });

  test("refused appends and finishes: oversize, past the size, empty, incomplete, bad declarations", async () => {
    const carol = await server().actor();
    const model = await createModel(carol);
    const body = randomBytes(MIB + 10);
    const { uploadId, chunkBytes } = await start(t, carol, model.id, body);
    expectRpcError(await append(t, carol, uploadId, 0, randomBytes(chunkBytes + 1)), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "data" });
    expectRpcError(await append(t, carol, uploadId, 0, new Uint8Array()), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "data" });
    ok(await append(t, carol, uploadId, 0, body.subarray(0, MIB)));
    expectRpcError(await append(t, carol, uploadId, MIB, randomBytes(11)), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "data", message: /past the declared size/ });
    expectRpcError(await append(t, carol, uploadId, -1, randomBytes(1)), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "offset" });
    const early = await finish(t, carol, uploadId);
    expectRpcError(early, { code: Code.FailedPrecondition, reason: "UPLOAD_INCOMPLETE", field: "uploadId" });
    expect(early.errorInfo!.metadata.receivedBytes).toBe(String(MIB));
    // Declarations are checked at the start.
    const bad = (request: object) => server().call(t, "startModelFileUpload", { modelId: model.id, ...request }, carol.token);
    expectRpcError(await bad({ sizeBytes: 10n, sha256: "abc" }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "sha256" });
    expectRpcError(await bad({ sizeBytes: -1n, sha256: sha(body) }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "sizeBytes" });
    expectRpcError(await bad({ sizeBytes: 9n * 1024n ** 3n, sha256: sha(body) }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "sizeBytes" });
    expectRpcError(await append(t, carol, "not-a-uuid", 0, randomBytes(1)), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "uploadId" });
  });

  test("a wrong SHA-256 at finish stores nothing and ends the session (start again)", async () => {
    const dave = await server().actor();
    const model = await createModel(dave);
    const body = randomBytes(5000);
    const { uploadId } = await start(t, dave, model.id, body, sha(Buffer.from("something else")));
    ok(await append(t, dave, uploadId, 0, body));
    expectRpcError(await finish(t, dave, uploadId), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "sha256", message: new RegExp(sha(body)) });
    expect((await dave.connect.getVoiceModel({ modelId: model.id })).model!.file).toBeUndefined();
    expect(storedKeys(`${dave.userId}/`)).toEqual([]);
    expect(await sessionRows(uploadId)).toEqual({ sessions: 0, chunks: 0 });
    expectRpcError(await append(t, dave, uploadId, 0, body), { code: Code.NotFound, reason: "UPLOAD_NOT_FOUND", field: "uploadId" });
  });

  test("another user's session is NOT_FOUND and stays untouched; another user's model is refused at the start; service may continue any", async () => {
    const erin = await server().actor();
    const mallory = await server().actor();
    const model = await createModel(erin);
    const body = randomBytes(2000);
    const { uploadId } = await start(t, erin, model.id, body);
    ok(await append(t, erin, uploadId, 0, body.subarray(0, 1000)));
    expectRpcError(await append(t, mallory, uploadId, 1000, body.subarray(1000)), { code: Code.NotFound, reason: "UPLOAD_NOT_FOUND", field: "uploadId" });
    expectRpcError(await finish(t, mallory, uploadId), { code: Code.NotFound, reason: "UPLOAD_NOT_FOUND", field: "uploadId" });
    expectRpcError(await append(t, erin, "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11", 0, body), { code: Code.NotFound, reason: "UPLOAD_NOT_FOUND", field: "uploadId" });
    const refused = await server().call(t, "startModelFileUpload", { modelId: model.id, sizeBytes: 2000n, sha256: sha(body) }, mallory.token);
    expectRpcError(refused, { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    expect(await sessionRows(uploadId)).toEqual({ sessions: 1, chunks: 1 });
    // The training service (role service) may finish an upload a user started for their model.
    const tts = await server().serviceActor();
    ok(await append(t, tts, uploadId, 1000, body.subarray(1000)));
    expect(ok(await finish(t, tts, uploadId)).file.sha256).toBe(sha(body));
  });
});

test("two instances on one database and store take alternate calls of one session (no state in the instance)", async () => {
  const other = await startTestServer({ database: server().db, env: { DATA_DIR: dataDir } });
  try {
    const jill = await server().actor();
    const model = await createModel(jill);
    const body = randomBytes(3 * 1000);
    const started = ok(await other.call("connect", "startModelFileUpload", { modelId: model.id, sizeBytes: 3000n, sha256: sha(body) }, jill.token));
    const instances = [server(), other, server()];
    for (let i = 0; i < 3; i++) {
      ok(await instances[i].call(i % 2 ? "grpc" : "connect", "appendModelFileUpload", { uploadId: started.uploadId, offset: BigInt(i * 1000), data: body.subarray(i * 1000, (i + 1) * 1000) }, jill.token));
    }
    expect(ok(await other.call("grpc", "finishModelFileUpload", { uploadId: started.uploadId }, jill.token)).file.sha256).toBe(sha(body));
    expect((await readFile(jill, model.id)).equals(body)).toBe(true);
  } finally {
    await other.close();
  }
});

describe("sessions that end without a finish", () => {
  const blobs = () => new FsBlobStore(blobRoot);

  test("the expiry sweep removes idle sessions' rows and staged objects; an expired session is NOT_FOUND before it is swept", async () => {
    const frank = await server().actor();
    const model = await createModel(frank);
    const body = randomBytes(3000);
    const idle = await start("grpc", frank, model.id, body);
    ok(await append("grpc", frank, idle.uploadId, 0, body.subarray(0, 1000)));
    const fresh = await start("connect", frank, model.id, randomBytes(10));
    expect(stagedKeys(frank.userId)).toHaveLength(1);
    // 25 hours without an append: past the default UPLOAD_EXPIRY_HOURS of 24.
    await server().db.knex("model_file_uploads").where({ id: idle.uploadId }).update({ updated_at: new Date(Date.now() - 25 * 3_600_000) });
    expectRpcError(await append("connect", frank, idle.uploadId, 1000, body.subarray(1000, 2000)), { code: Code.NotFound, reason: "UPLOAD_NOT_FOUND" });
    // The sweep as the periodic job runs it, with the expiry as its cut-off.
    const swept = await sweepIdleUploads({ knex: server().db.knex, blobs: blobs() }, new Date(Date.now() - 24 * 3_600_000));
    expect(swept).toBeGreaterThanOrEqual(1);
    expect(await sessionRows(idle.uploadId)).toEqual({ sessions: 0, chunks: 0 });
    expect(stagedKeys(frank.userId)).toEqual([]);
    expect(await sessionRows(fresh.uploadId)).toEqual({ sessions: 1, chunks: 0 });
    // A cut-off in the future takes the fresh one too.
    await sweepIdleUploads({ knex: server().db.knex, blobs: blobs() }, new Date(Date.now() + 60_000));
    expect(await sessionRows(fresh.uploadId)).toEqual({ sessions: 0, chunks: 0 });
  });

  test("DeleteUserData drops the user's sessions and staged bytes", async () => {
    const gina = await server().actor();
    const model = await createModel(gina);
    const body = randomBytes(4000);
    const { uploadId } = await start("connect", gina, model.id, body);
    ok(await append("connect", gina, uploadId, 0, body.subarray(0, 2000)));
    expect(stagedKeys(gina.userId)).toHaveLength(1);
    const admin = await server().adminActor();
    for await (const _ of grpcStreamingClient(server().grpcPort, admin.token).deleteUserData({ userId: gina.userId })) void _;
    expect(await sessionRows(uploadId)).toEqual({ sessions: 0, chunks: 0 });
    expect(storedKeys(`${gina.userId}/`)).toEqual([]);
    expect(Number((await server().db.knex("model_file_uploads").where({ user_id: gina.userId }).count("* as n").first())!.n)).toBe(0);
  });

  test("withdrawing the model's consent drops its sessions and staged bytes", async () => {
    const hank = await server().actor();
    const model = await createModel(hank);
    const { message } = await hank.grpc.recordConsent({
      modelId: model.id,
      speaker: { kind: "owner" },
      statementText: "I agree to my voice being cloned",
      statementVersion: "v1",
      captureMethod: "in_app_recording",
    });
    const body = randomBytes(4000);
    const { uploadId } = await start("grpc", hank, model.id, body);
    ok(await append("grpc", hank, uploadId, 0, body.subarray(0, 2000)));
    expect(stagedKeys(hank.userId)).toHaveLength(1);
    ok(await server().call("grpc", "revokeConsent", { consentId: message.consent!.id }, hank.token));
    expect(await sessionRows(uploadId)).toEqual({ sessions: 0, chunks: 0 });
    expect(stagedKeys(hank.userId)).toEqual([]);
  });
});

describe("the orphan sweep and staged chunks", () => {
  const ownDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-chunked-orphans-"));
  const root = path.join(ownDir, "blobs");
  let own: TestServer;
  beforeAll(async () => {
    own = await startTestServer({ env: { DATA_DIR: ownDir, FILE_PURGE_INTERVAL_MS: "200", ORPHAN_GRACE_SECONDS: "60" } });
  });
  afterAll(async () => {
    await own?.close();
    fs.rmSync(ownDir, { recursive: true, force: true });
  });

  test("keeps the chunks of an open session however old, and sweeps staged objects no chunk row names", async () => {
    const ivy = await own.actor();
    const model = await createModel(ivy);
    const body = randomBytes(2000);
    const started = await own.call("grpc", "startModelFileUpload", { modelId: model.id, sizeBytes: 2000n, sha256: sha(body) }, ivy.token);
    const uploadId = ok(started).uploadId as string;
    ok(await own.call("grpc", "appendModelFileUpload", { uploadId, offset: 0n, data: body.subarray(0, 1000) }, ivy.token));
    const folder = path.join(root, ivy.userId, "uploads", uploadId);
    const [chunk] = fs.readdirSync(folder).map((f) => path.join(folder, f));
    // A crash between writing a chunk and committing its row leaves an object no row names.
    const stray = path.join(folder, "left-by-a-crash");
    fs.writeFileSync(stray, "x");
    // Both older than the grace period.
    const old = new Date(Date.now() - 120_000);
    for (const file of [chunk, stray]) fs.utimesSync(file, old, old);
    for (let i = 0; i < 200 && fs.existsSync(stray); i++) await sleep(50);
    expect(fs.existsSync(stray)).toBe(false);
    expect(fs.existsSync(chunk)).toBe(true);
    ok(await own.call("connect", "appendModelFileUpload", { uploadId, offset: 1000n, data: body.subarray(1000) }, ivy.token));
    expect(ok(await own.call("connect", "finishModelFileUpload", { uploadId }, ivy.token)).file.sha256).toBe(sha(body));
  });
});
