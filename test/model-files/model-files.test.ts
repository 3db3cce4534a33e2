import { Code } from "@connectrpc/connect";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { ExportVoiceModelResponse } from "../../gen/voicemodel/v1/model_files_pb";
import { createModel, sleep, useTestServer, type Actor } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";
import { httpError, rpcError } from "../helpers/expect-error";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-files-"));
const blobRoot = path.join(dataDir, "blobs");
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const server = useTestServer({
  env: { DATA_DIR: dataDir, RATE_LIMIT_CREATE: "100000/3600", RATE_LIMIT_UPDATE: "100000/3600", RATE_LIMIT_EXEMPT_ROLES: "admin,service,user" },
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const streaming = (actor: Pick<Actor, "token">) => grpcStreamingClient(server().grpcPort, actor.token);

/** Random bytes with a compressible tail, so both code paths see data. */
function modelBytes(size: number): Buffer {
  const b = randomBytes(size);
  b.fill(7, Math.floor(size / 2));
  return b;
}

async function* uploadMessages(modelId: string, body: Buffer, extra: { sha256?: string; sizeBytes?: bigint } = {}) {
  yield { part: { case: "header" as const, value: { modelId, ...extra } } };
  for (let i = 0; i < body.length; i += 300_000) yield { part: { case: "chunk" as const, value: body.subarray(i, i + 300_000) } };
}

async function upload(actor: Actor, modelId: string, body: Buffer, extra = {}) {
  return streaming(actor).uploadModelFile(uploadMessages(modelId, body, extra));
}

async function readFile(actor: Pick<Actor, "token">, modelId: string, offset?: bigint, length?: bigint): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const m of streaming(actor).readModelFile({ modelId, offset, length })) parts.push(Buffer.from(m.chunk));
  return Buffer.concat(parts);
}

async function drain(stream: AsyncIterable<unknown>) {
  for await (const _ of stream) void _;
}

/** Every object key under the blob root (relative, '/'-separated). */
function storedKeys(prefix = ""): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    if (!fs.existsSync(dir)) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const key = rel ? `${rel}/${e.name}` : e.name;
      if (key === ".tmp") continue;
      if (e.isDirectory()) walk(path.join(dir, e.name), key);
      else out.push(key);
    }
  };
  walk(blobRoot, "");
  return out.filter((k) => k.startsWith(prefix)).sort();
}

const http = (p: string, init: RequestInit & { token?: string } = {}) =>
  fetch(`${server().baseUrl}${p}`, { ...init, headers: { ...(init.token ? { authorization: `Bearer ${init.token}` } : {}), ...(init.headers as object) } });

describe("upload and read", () => {
  test("gRPC upload then ReadModelFile returns the same bytes, whole and by range; stored encrypted", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const body = modelBytes(2_500_000);
    const { model: after, file } = await upload(alice, model.id, body);
    expect(file!.sha256).toBe(sha(body));
    expect(Number(file!.sizeBytes)).toBe(body.length);
    expect(file!.deduplicated).toBe(false);
    expect(after!.modelPath.startsWith(`${alice.userId}/${model.id}/`)).toBe(true);
    const keys = storedKeys(`${alice.userId}/`);
    expect(keys).toEqual([after!.modelPath]);
    const stored = fs.readFileSync(path.join(blobRoot, keys[0]));
    expect(stored.includes(body.subarray(1000, 1064))).toBe(false);

    expect((await readFile(alice, model.id)).equals(body)).toBe(true);
    expect((await readFile(alice, model.id, 1_048_570n, 20n)).equals(body.subarray(1_048_570, 1_048_590))).toBe(true);
    expect((await readFile(alice, model.id, 2_000_000n)).equals(body.subarray(2_000_000))).toBe(true);
    // The service role reads any model's file (the TTS service).
    const tts = await server().serviceActor();
    expect((await readFile(tts, model.id, 0n, 10n)).equals(body.subarray(0, 10))).toBe(true);
  });

  test("HTTP PUT upload and GET download with Range", async () => {
    const bob = await server().actor();
    const model = await createModel(bob);
    const body = modelBytes(1_300_000);
    const put = await http(`/v1/voice-models/${model.id}/file`, { method: "PUT", token: bob.token, body });
    expect(put.status).toBe(200);
    const json = (await put.json()) as any;
    expect(json.file.sha256).toBe(sha(body));
    const whole = await http(`/v1/voice-models/${model.id}/file`, { token: bob.token });
    expect(whole.status).toBe(200);
    expect(whole.headers.get("accept-ranges")).toBe("bytes");
    expect(Buffer.from(await whole.arrayBuffer()).equals(body)).toBe(true);
    const part = await http(`/v1/voice-models/${model.id}/file`, { token: bob.token, headers: { range: "bytes=1048000-1049000" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 1048000-1049000/${body.length}`);
    expect(Buffer.from(await part.arrayBuffer()).equals(body.subarray(1_048_000, 1_049_001))).toBe(true);
    const suffix = await http(`/v1/voice-models/${model.id}/file`, { token: bob.token, headers: { range: "bytes=-100" } });
    expect(Buffer.from(await suffix.arrayBuffer()).equals(body.subarray(body.length - 100))).toBe(true);
    const bad = await http(`/v1/voice-models/${model.id}/file`, { token: bob.token, headers: { range: `bytes=${body.length}-` } });
    expect(bad.status).toBe(416);
  });

  test("once the service stores a model's file, its modelPath is the service's own and cannot be updated", async () => {
    const erin = await server().actor();
    const model = await createModel(erin);
    expect((await server().call("grpc", "updateVoiceModel", { modelId: model.id, modelPath: "elsewhere.pth" }, erin.token)).code).toBe(0);
    expect((await http(`/v1/voice-models/${model.id}/file`, { method: "PUT", token: erin.token, body: modelBytes(10_000) })).status).toBe(200);
    const refused = await server().call("connect", "updateVoiceModel", { modelId: model.id, modelPath: "elsewhere-again.pth" }, erin.token);
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.errorInfo?.metadata.field).toBe("modelPath");
    const after = await server().call("grpc", "getVoiceModel", { modelId: model.id }, erin.token);
    expect(after.message.model.modelPath).not.toBe("elsewhere-again.pth");
  });

  test("HTTP downloads are audited and counted like ReadModelFile and ExportVoiceModel", async () => {
    const dana = await server().actor();
    const model = await createModel(dana);
    expect((await http(`/v1/voice-models/${model.id}/file`, { method: "PUT", token: dana.token, body: modelBytes(50_000) })).status).toBe(200);
    for (const route of ["file", "export"]) {
      const response = await http(`/v1/voice-models/${model.id}/${route}`, { token: dana.token });
      expect(response.status).toBe(200);
      await response.arrayBuffer();
    }
    // A download is audited once its whole body has gone out, so the client can have it all a
    // moment before the audit row commits.
    const admin = await server().adminActor();
    let actions: string[] = [];
    for (let i = 0; i < 100 && !["file.read", "model.exported"].every((a) => actions.includes(a)); i++) {
      if (i > 0) await sleep(20);
      const { message } = await admin.grpc.listAuditEvents({ modelId: model.id, limit: 100 });
      actions = message.events.map((e: { action: string }) => e.action);
    }
    expect(actions).toEqual(expect.arrayContaining(["file.read", "model.exported"]));
    const metrics = await (await fetch(`${server().baseUrl}/metrics`)).text();
    expect(metrics).toMatch(/method="readModelFile",code="OK"/);
    expect(metrics).toMatch(/method="exportVoiceModel",code="OK"/);
  });

  test("a refused upload (wrong checksum or size) leaves no file and no object", async () => {
    const carol = await server().actor();
    const model = await createModel(carol);
    const body = modelBytes(100_000);
    expect(await rpcError(upload(carol, model.id, body, { sha256: sha(Buffer.from("other")) }))).toEqual({
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
    });
    expect(await rpcError(upload(carol, model.id, body, { sizeBytes: 5n }))).toMatchObject({ code: Code.InvalidArgument });
    expect(await rpcError(drain(streaming(carol).readModelFile({ modelId: model.id })))).toEqual({
      code: Code.FailedPrecondition,
      reason: "MODEL_FILE_MISSING",
    });
    expect(storedKeys(`${carol.userId}/`)).toEqual([]);
  });

  test("deduplicated per user by content, never across users", async () => {
    const dan = await server().actor();
    const erin = await server().actor();
    const body = modelBytes(200_000);
    const m1 = await createModel(dan);
    const m2 = await createModel(dan);
    const m3 = await createModel(erin);
    expect((await upload(dan, m1.id, body)).file!.deduplicated).toBe(false);
    const second = await upload(dan, m2.id, body);
    expect(second.file!.deduplicated).toBe(true);
    expect((await upload(erin, m3.id, body)).file!.deduplicated).toBe(false);
    expect(storedKeys(`${dan.userId}/`)).toHaveLength(1);
    expect(storedKeys(`${erin.userId}/`)).toHaveLength(1);
    expect((await readFile(dan, m2.id)).equals(body)).toBe(true);
    // Analytics count the recorded sizes; the shared file (same modelPath) counts once.
    const analytics = await server().call("grpc", "getVoiceModelAnalytics", {}, dan.token);
    expect(analytics.code).toBe(0);
    expect(analytics.message.storageUsedMb).toBeCloseTo(body.length / 1e6, 3);
  });

  test("a flipped byte in the stored file fails the read with DATA_LOSS and sends nothing", async () => {
    const fay = await server().actor();
    const model = await createModel(fay);
    const body = randomBytes(300_000);
    const { model: after } = await upload(fay, model.id, body);
    const file = path.join(blobRoot, after!.modelPath);
    const stored = fs.readFileSync(file);
    stored[stored.length - 5000] ^= 0x40;
    fs.writeFileSync(file, stored);
    const received: Buffer[] = [];
    const error = await rpcError(
      (async () => {
        for await (const m of streaming(fay).readModelFile({ modelId: model.id })) received.push(Buffer.from(m.chunk));
      })(),
    );
    expect(error).toEqual({ code: Code.DataLoss, reason: "FILE_CORRUPT" });
    expect(Buffer.concat(received).length).toBe(0);
    const viaHttp = await http(`/v1/voice-models/${model.id}/file`, { token: fay.token });
    expect(viaHttp.status).toBe(500);
    expect(httpError(await viaHttp.json())?.errorInfo?.reason).toBe("FILE_CORRUPT");
  });
});

describe("access", () => {
  test("another user can neither upload, read nor export; no token is unauthenticated", async () => {
    const owner = await server().actor();
    const stranger = await server().actor();
    const model = await createModel(owner);
    await upload(owner, model.id, modelBytes(10_000));
    expect((await rpcError(upload(stranger, model.id, modelBytes(10)))).code).toBe(Code.PermissionDenied);
    expect((await rpcError(drain(streaming(stranger).readModelFile({ modelId: model.id })))).code).toBe(Code.PermissionDenied);
    expect((await rpcError(drain(streaming(stranger).exportVoiceModel({ modelId: model.id })))).code).toBe(Code.PermissionDenied);
    expect((await rpcError(drain(grpcStreamingClient(server().grpcPort).readModelFile({ modelId: model.id })))).code).toBe(
      Code.Unauthenticated,
    );
    for (const p of ["file", "export"]) {
      expect((await http(`/v1/voice-models/${model.id}/${p}`, { token: stranger.token })).status).toBe(403);
      expect((await http(`/v1/voice-models/${model.id}/${p}`)).status).toBe(401);
    }
    expect((await http(`/v1/voice-models/${model.id}/file`, { method: "PUT", token: stranger.token, body: "x" })).status).toBe(403);
  });
});

describe("shared models", () => {
  test("a user the model is shared with for use reads its file; a view share does not; neither may export", async () => {
    const owner = await server().actor();
    const user = await server().actor();
    const viewer = await server().actor();
    const model = await createModel(owner);
    const body = modelBytes(50_000);
    await upload(owner, model.id, body);
    await owner.grpc.shareVoiceModel({ modelId: model.id, targetUserIds: [user.userId], permissions: ["use"] });
    await owner.grpc.shareVoiceModel({ modelId: model.id, targetUserIds: [viewer.userId], permissions: ["view"] });
    expect((await readFile(user, model.id)).equals(body)).toBe(true);
    expect((await http(`/v1/voice-models/${model.id}/file`, { token: user.token })).status).toBe(200);
    expect((await rpcError(drain(streaming(viewer).readModelFile({ modelId: model.id })))).code).toBe(Code.PermissionDenied);
    expect((await rpcError(drain(streaming(user).exportVoiceModel({ modelId: model.id })))).code).toBe(Code.PermissionDenied);
  });
});

describe("export and import", () => {
  async function exportMessages(actor: Actor, modelId: string): Promise<ExportVoiceModelResponse[]> {
    const out: ExportVoiceModelResponse[] = [];
    for await (const m of streaming(actor).exportVoiceModel({ modelId })) out.push(m);
    return out;
  }

  test("gRPC export -> import round trip is byte-identical and creates a new model", async () => {
    const gus = await server().actor();
    const model = await createModel(gus, { qualityComponents: { similarity: 0.9, naturalness: 0.8, clarity: 0.7, consistency: 0.6 }, metadata: { epochs: 40 } });
    const body = modelBytes(1_700_000);
    await upload(gus, model.id, body);
    const messages = await exportMessages(gus, model.id);
    expect(messages[0].part.case).toBe("header");
    const header = messages[0].part.value as { sha256: string; sizeBytes: bigint; training?: Record<string, unknown>; model?: { id: string } };
    expect(header.sha256).toBe(sha(body));
    expect(header.model!.id).toBe(model.id);
    expect(header.training).toMatchObject({ metadata: { epochs: 40 } });
    // Usage stats come from the usage room (none recorded yet).
    expect((header as { usage?: Record<string, unknown> }).usage).toMatchObject({ modelId: model.id, usageCount: 0 });
    expect(messages[messages.length - 1].part).toMatchObject({ case: "trailer", value: { sha256: sha(body) } });

    const other = await server().actor();
    const imported = await streaming(other).importVoiceModel(
      (async function* () {
        for (const m of messages) yield { part: m.part };
      })(),
    );
    expect(imported.model!.id).not.toBe(model.id);
    expect(imported.model!.userId).toBe(other.userId);
    expect(imported.model!.qualityComponents).toMatchObject({ similarity: 0.9 });
    expect(imported.model!.metadata).toEqual({ epochs: 40 });
    expect((await readFile(other, imported.model!.id)).equals(body)).toBe(true);
  });

  test("a tampered or truncated gRPC import is refused and leaves nothing", async () => {
    const hal = await server().actor();
    const model = await createModel(hal);
    const body = modelBytes(400_000);
    await upload(hal, model.id, body);
    const messages = await exportMessages(hal, model.id);
    const importer = await server().actor();
    const tampered = messages.map((m) => {
      if (m.part.case !== "chunk") return { part: m.part };
      const copy = Buffer.from(m.part.value);
      copy[10] ^= 1;
      return { part: { case: "chunk" as const, value: copy } };
    });
    const truncated = messages.slice(0, -1).map((m) => ({ part: m.part }));
    const short = [messages[0], messages[messages.length - 1]].map((m) => ({ part: m.part }));
    for (const attempt of [tampered, truncated, short]) {
      const error = await rpcError(
        streaming(importer).importVoiceModel(
          (async function* () {
            yield* attempt;
          })(),
        ),
      );
      expect(error.code).toBe(Code.InvalidArgument);
    }
    const { message } = await importer.grpc.listVoiceModels({ limit: 100 });
    expect(message.models).toHaveLength(0);
    expect(storedKeys(`${importer.userId}/`)).toEqual([]);
  });

  test("HTTP export with Range resumes to the full file; HTTP import round trip; tampering refused", async () => {
    const ida = await server().actor();
    const model = await createModel(ida);
    const body = modelBytes(2_200_000);
    await upload(ida, model.id, body);
    const full = await http(`/v1/voice-models/${model.id}/export`, { token: ida.token });
    expect(full.status).toBe(200);
    const exported = Buffer.from(await full.arrayBuffer());
    const etag = full.headers.get("etag")!;
    expect(exported.subarray(0, 4).toString()).toBe("VMX1");
    expect(exported.subarray(exported.length - 32).toString("hex")).toBe(sha(body));
    // A broken download resumes from where it stopped.
    const cut = 1_234_567;
    const rest = await http(`/v1/voice-models/${model.id}/export`, { token: ida.token, headers: { range: `bytes=${cut}-`, "if-range": etag } });
    expect(rest.status).toBe(206);
    expect(Buffer.concat([exported.subarray(0, cut), Buffer.from(await rest.arrayBuffer())]).equals(exported)).toBe(true);
    // Ranges inside the header and across the file/trailer boundary.
    for (const [a, b] of [
      [0, 10],
      [exported.length - 40, exported.length - 1],
    ]) {
      const r = await http(`/v1/voice-models/${model.id}/export`, { token: ida.token, headers: { range: `bytes=${a}-${b}` } });
      expect(Buffer.from(await r.arrayBuffer()).equals(exported.subarray(a, b + 1))).toBe(true);
    }

    const jo = await server().actor();
    const imported = await http(`/v1/voice-models/import`, { method: "POST", token: jo.token, body: exported });
    expect(imported.status).toBe(200);
    const json = (await imported.json()) as any;
    expect(json.model.userId).toBe(jo.userId);
    expect((await readFile(jo, json.model.id)).equals(body)).toBe(true);

    const kim = await server().actor();
    const tampered = Buffer.from(exported);
    tampered[Math.floor(tampered.length / 2)] ^= 1;
    for (const bad of [tampered, exported.subarray(0, exported.length - 1000), exported.subarray(0, 6)]) {
      const r = await http(`/v1/voice-models/import`, { method: "POST", token: kim.token, body: bad });
      expect(r.status).toBe(400);
    }
    const { message } = await kim.grpc.listVoiceModels({ limit: 100 });
    expect(message.models).toHaveLength(0);
    expect(storedKeys(`${kim.userId}/`)).toEqual([]);
  });
});

describe("ingest from incoming/", () => {
  function writeIncoming(key: string, body: Buffer) {
    fs.mkdirSync(path.dirname(path.join(blobRoot, key)), { recursive: true });
    fs.writeFileSync(path.join(blobRoot, key), body);
  }

  test("the training service's raw file is sealed under the model, the source deleted, the path the service's", async () => {
    const training = await server().serviceActor();
    const user = await server().actor();
    const body = modelBytes(600_000);
    const source = `incoming/${user.userId}/job-1/model.pth`;
    writeIncoming(source, body);
    const model = await createModel(training, { userId: user.userId, modelPath: source, trainingJobId: "job-1" });
    expect(model.modelPath.startsWith(`${user.userId}/${model.id}/`)).toBe(true);
    expect(fs.existsSync(path.join(blobRoot, source))).toBe(false);
    expect((await readFile(user, model.id)).equals(body)).toBe(true);
    const { message } = await user.grpc.getVoiceModel({ modelId: model.id });
    expect(message.model!.modelPath).toBe(model.modelPath);
    // A retried create (same training job) returns the same model although the source is gone.
    const again = await createModel(training, { userId: user.userId, modelPath: source, trainingJobId: "job-1" });
    expect(again.id).toBe(model.id);
  });

  test("a path under another user's folder is PERMISSION_DENIED, a missing one INVALID_ARGUMENT, other paths stay references", async () => {
    const training = await server().serviceActor();
    const user = await server().actor();
    writeIncoming(`incoming/someone-else/x.pth`, randomBytes(10));
    const denied = await server().call("grpc", "createVoiceModel", { userId: user.userId, provider: "xtts-v2", modelPath: "incoming/someone-else/x.pth" }, training.token);
    expect(denied.code).toBe(Code.PermissionDenied);
    const traversal = await server().call("grpc", "createVoiceModel", { userId: user.userId, provider: "xtts-v2", modelPath: `incoming/${user.userId}/../someone-else/x.pth` }, training.token);
    expect(traversal.code).toBe(Code.InvalidArgument);
    const missing = await server().call("grpc", "createVoiceModel", { userId: user.userId, provider: "xtts-v2", modelPath: `incoming/${user.userId}/nope.pth` }, training.token);
    expect(missing.code).toBe(Code.InvalidArgument);
    const plain = await createModel(training, { userId: user.userId, modelPath: "gs://bucket/elsewhere/model.pth" });
    expect(plain.modelPath).toBe("gs://bucket/elsewhere/model.pth");
    expect(fs.existsSync(path.join(blobRoot, "incoming/someone-else/x.pth"))).toBe(true);
  });
});
