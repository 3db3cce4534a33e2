// Runs in the browser, on a page of another origin than the service: what a web app built on
// connect-web and fetch does. Bundled with esbuild at test time; the test drives it through
// globalThis.scenarios and checks what each scenario returns.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { errorFromJson } from "@connectrpc/connect/protocol-connect";
import type { JsonValue } from "@bufbuild/protobuf";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb";
import { VoiceModelService } from "../../../gen/voicemodel/v1/voice_model_service_pb";

export interface Target {
  baseUrl: string;
  token: string;
}
export type Protocol = "connect" | "grpc-web";

function client(protocol: Protocol, { baseUrl, token }: Target) {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const transport =
    protocol === "connect"
      ? createConnectTransport({ baseUrl, useBinaryFormat: false, interceptors: [bearer] })
      : createGrpcWebTransport({ baseUrl, interceptors: [bearer] });
  return createClient(VoiceModelService, transport);
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomFile(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  // getRandomValues fills at most 64 KiB per call.
  for (let i = 0; i < size; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
  return bytes;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function describeError(error: unknown) {
  if (!(error instanceof ConnectError)) return { kind: "other", name: (error as Error).name, message: String(error) };
  return {
    kind: "connect",
    code: error.code,
    reason: error.findDetails(ErrorInfoSchema)[0]?.reason,
    requestId: error.metadata.get("x-request-id"),
  };
}

/** The reason of a file route's error reply: Connect's error JSON with its ErrorInfo detail. */
async function errorReason(response: Response): Promise<string | undefined> {
  const error = errorFromJson((await response.json()) as JsonValue, undefined, new ConnectError("not an error body", Code.Unknown));
  return error.findDetails(ErrorInfoSchema)[0]?.reason;
}

/** The headers a script wants from a file reply: null when CORS hides one. */
function fileHeaders(response: Response) {
  const get = (name: string) => response.headers.get(name);
  return {
    etag: get("etag"),
    "content-range": get("content-range"),
    "accept-ranges": get("accept-ranges"),
    "content-length": get("content-length"),
    "content-disposition": get("content-disposition"),
    "x-request-id": get("x-request-id"),
  };
}

const scenarios = {
  /** Unary calls with a deadline and a request id, and an error with its details. */
  async unary(protocol: Protocol, target: Target, requestId: string) {
    const api = client(protocol, target);
    let replyRequestId: string | null = null;
    const created = await api.createVoiceModel(
      { provider: "xtts-v2", modelPath: `browser/${protocol}.pth` },
      { timeoutMs: 10_000, headers: { "x-request-id": requestId }, onHeader: (h) => (replyRequestId = h.get("x-request-id")) },
    );
    const got = await api.getVoiceModel({ modelId: created.model!.id }, { timeoutMs: 10_000 });
    let error: unknown;
    try {
      await api.getVoiceModel({ modelId: "00000000-0000-4000-8000-000000000000" });
    } catch (e) {
      error = e;
    }
    return { modelId: got.model!.id, userId: got.model!.userId, replyRequestId, error: describeError(error) };
  },

  /** Server streaming: ReadModelFile, whole file, checked against its sha256. */
  async readStream(protocol: Protocol, target: Target, modelId: string) {
    const parts: Uint8Array[] = [];
    let declared = "";
    for await (const m of client(protocol, target).readModelFile({ modelId }, { timeoutMs: 10_000 })) {
      if (m.sha256) declared = m.sha256;
      parts.push(m.chunk);
    }
    const bytes = concat(parts);
    return { messages: parts.length, size: bytes.length, sha256: await sha256Hex(bytes), declared };
  },

  /** PUT /v1/voice-models/{id}/file with x-content-sha256: a wrong checksum first, then the right one. */
  async upload(target: Target, modelId: string, size: number) {
    const bytes = randomFile(size);
    const sha256 = await sha256Hex(bytes);
    const put = (checksum: string) =>
      fetch(`${target.baseUrl}/v1/voice-models/${modelId}/file`, {
        method: "PUT",
        headers: { authorization: `Bearer ${target.token}`, "content-type": "application/octet-stream", "x-content-sha256": checksum },
        body: bytes,
      });
    const wrong = await put("0".repeat(64));
    const wrongReason = await errorReason(wrong);
    const right = await put(sha256);
    return {
      sha256,
      wrong: { status: wrong.status, reason: wrongReason, requestId: wrong.headers.get("x-request-id") },
      right: { status: right.status, body: (await right.json()) as { file?: { sha256: string; sizeBytes: string } }, requestId: right.headers.get("x-request-id") },
    };
  },

  /**
   * A resumable download: the first half, then the rest with If-Range (the ETag the first reply
   * gave), then a resume with a stale validator (the server must send the whole file again).
   */
  async resumableDownload(target: Target, modelId: string) {
    const url = `${target.baseUrl}/v1/voice-models/${modelId}/file`;
    const auth = { authorization: `Bearer ${target.token}` };
    const head = await fetch(url, { method: "HEAD", headers: auth });
    const size = Number(head.headers.get("content-length"));
    const half = Math.floor(size / 2);
    const first = await fetch(url, { headers: { ...auth, range: `bytes=0-${half - 1}` } });
    const firstBytes = new Uint8Array(await first.arrayBuffer());
    const etag = first.headers.get("etag")!;
    const rest = await fetch(url, { headers: { ...auth, range: `bytes=${half}-`, "if-range": etag } });
    const restBytes = new Uint8Array(await rest.arrayBuffer());
    const stale = await fetch(url, { headers: { ...auth, range: `bytes=${half}-`, "if-range": '"stale"' } });
    const staleBytes = new Uint8Array(await stale.arrayBuffer());
    return {
      head: { status: head.status, ...fileHeaders(head) },
      first: { status: first.status, length: firstBytes.length, ...fileHeaders(first) },
      rest: { status: rest.status, length: restBytes.length, ...fileHeaders(rest) },
      stale: { status: stale.status, length: staleBytes.length },
      sha256: await sha256Hex(concat([firstBytes, restBytes])),
    };
  },

  /** The export route names its file in Content-Disposition; a missing model is a JSON error. */
  async exportAndMissing(target: Target, modelId: string) {
    const auth = { authorization: `Bearer ${target.token}` };
    const exported = await fetch(`${target.baseUrl}/v1/voice-models/${modelId}/export`, { headers: { ...auth, range: "bytes=0-15" } });
    await exported.arrayBuffer();
    const missing = await fetch(`${target.baseUrl}/v1/voice-models/00000000-0000-4000-8000-000000000000/file`, { headers: auth });
    return {
      exported: { status: exported.status, ...fileHeaders(exported) },
      missing: { status: missing.status, reason: await errorReason(missing), requestId: missing.headers.get("x-request-id") },
    };
  },

  /** The REST paths: a DELETE (a preflighted method) and a flat error whose body and retry fields a script reads. */
  async restDelete(target: Target, modelId: string) {
    const auth = { authorization: `Bearer ${target.token}`, "x-request-id": "browser-rest-1" };
    const deleted = await fetch(`${target.baseUrl}/voice-models/${modelId}`, { method: "DELETE", headers: auth });
    const again = await fetch(`${target.baseUrl}/voice-models/${modelId}`, { method: "DELETE", headers: auth });
    return {
      deleted: { status: deleted.status, body: (await deleted.json()) as JsonValue, requestId: deleted.headers.get("x-request-id") },
      again: { status: again.status, body: (await again.json()) as JsonValue },
    };
  },

  /** Everything a page of an origin the service does not list tries: each must fail in the browser. */
  async refused(target: Target, modelId: string) {
    const outcome = async (call: () => Promise<unknown>) => {
      try {
        await call();
        return { ok: true };
      } catch (error) {
        return { ok: false, ...describeError(error) };
      }
    };
    return {
      connect: await outcome(() => client("connect", target).createVoiceModel({ provider: "xtts-v2", modelPath: "refused.pth" })),
      grpcWeb: await outcome(() => client("grpc-web", target).createVoiceModel({ provider: "xtts-v2", modelPath: "refused.pth" })),
      upload: await outcome(() =>
        fetch(`${target.baseUrl}/v1/voice-models/${modelId}/file`, {
          method: "PUT",
          headers: { authorization: `Bearer ${target.token}`, "x-content-sha256": "0".repeat(64) },
          body: new Uint8Array(16),
        }),
      ),
      download: await outcome(() => fetch(`${target.baseUrl}/v1/voice-models/${modelId}/file`, { headers: { authorization: `Bearer ${target.token}` } })),
    };
  },
};

export type Scenarios = typeof scenarios;
(globalThis as { scenarios?: Scenarios }).scenarios = scenarios;
