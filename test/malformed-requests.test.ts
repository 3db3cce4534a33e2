import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import net from "node:net";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import { StatusSchema } from "../gen/google/rpc/status_pb";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { httpError } from "./helpers/expect-error";
import { createModel, useTestServer, type Actor } from "./helpers/harness";

// Malformed requests of every kind, on both listeners: none may end the process, each gets a
// 4xx in the service's error shape (with a request id), and none changes any stored data.
const server = useTestServer();
const SERVICE = "/voicemodel.v1.VoiceModelService";

interface RawReply {
  status?: number;
  headers: Record<string, string>;
  body: string;
  timedOut: boolean;
}

/** Writes raw bytes to the HTTP listener and reads one reply (or the close). */
function rawHttp(bytes: Buffer | string, { endAfterWrite = false } = {}): Promise<RawReply> {
  return new Promise((resolve) => {
    const socket = net.connect(server().httpPort, "127.0.0.1");
    const chunks: Buffer[] = [];
    let finished = false;
    const finish = (timedOut = false) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseReply(Buffer.concat(chunks)), timedOut });
    };
    const timer = setTimeout(() => finish(true), 10_000);
    socket.on("data", (chunk) => {
      chunks.push(chunk);
      if (complete(Buffer.concat(chunks))) finish();
    });
    socket.on("error", () => finish());
    socket.on("close", () => finish());
    socket.write(bytes, () => {
      if (endAfterWrite) socket.end();
    });
  });
}

function splitReply(raw: Buffer): [head: string, body: Buffer] | undefined {
  const end = raw.indexOf("\r\n\r\n");
  return end < 0 ? undefined : [raw.subarray(0, end).toString("latin1"), raw.subarray(end + 4)];
}

function complete(raw: Buffer): boolean {
  const split = splitReply(raw);
  if (!split) return false;
  const length = /\r\ncontent-length: *(\d+)/i.exec(split[0]);
  if (length) return split[1].length >= Number(length[1]);
  if (/\r\ntransfer-encoding: *chunked/i.test(split[0])) return split[1].includes("0\r\n\r\n");
  return /^HTTP\/1\.1 (204|304)/.test(split[0]);
}

function parseReply(raw: Buffer): Omit<RawReply, "timedOut"> {
  const split = splitReply(raw);
  if (!split) return { headers: {}, body: "" };
  const [statusLine, ...lines] = split[0].split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = split[1].toString();
  if (/chunked/i.test(headers["transfer-encoding"] ?? "")) body = dechunk(split[1]);
  return { status: Number(statusLine.split(" ")[1]), headers, body };
}

function dechunk(data: Buffer): string {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = data.indexOf("\r\n", at);
    const size = parseInt(data.subarray(at, eol).toString(), 16);
    if (!size) return Buffer.concat(out).toString();
    out.push(data.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
}

const request = (method: string, path: string, headers: Record<string, string> = {}, body = "") =>
  `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n` +
  Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join("") +
  (body ? `content-length: ${Buffer.byteLength(body)}\r\n` : "") +
  `\r\n${body}`;

/** Path segments that are not valid percent-encoded UTF-8, or decode to something no id can be. */
const BROKEN_SEGMENTS = [
  "%E0%A4%A",
  "%",
  "%Z1",
  "%zz",
  "%C0%AF",
  "%ED%A0%80",
  "%FF%FE",
  "%E0%A4",
  "a%2",
  "%%",
  "%F4%90%80%80",
  "%00",
  "..%2F..%2Fetc%2Fpasswd",
  "%uD800",
  "x".repeat(3000),
];

/** Every HTTP route as its segments ({id} is where an id goes) and the methods it serves. */
const ROUTES: Array<[segments: string[], methods: string[]]> = [
  [["v1", "voice-models", "{id}", "file"], ["GET", "HEAD", "PUT"]],
  [["v1", "voice-models", "{id}", "export"], ["GET"]],
  [["v1", "voice-models", "import"], ["POST"]],
  [["v1", "backups", "{id}"], ["GET"]],
  [[SERVICE.slice(1), "GetVoiceModel"], ["POST"]],
  [[SERVICE.slice(1), "ListVoiceModels"], ["POST"]],
];

let alice: Actor;
let modelId: string;

async function snapshot(): Promise<unknown> {
  const knex = server().db.knex;
  const tables = ["voice_models", "model_files", "backups", "model_owners", "usage_events", "usage_totals"];
  return Promise.all(tables.map((t) => knex(t).select("*").orderBy(knex.raw("1"))));
}

beforeAll(async () => {
  alice = await server().actor();
  modelId = (await createModel(alice)).id;
});

/** A reply the server wrote itself: a 4xx in Connect's error JSON, with a request id. */
function expectErrorReply(reply: RawReply, what: string) {
  const context = `${what} -> ${reply.status} ${reply.body.slice(0, 200)}`;
  expect({ context, timedOut: reply.timedOut }).toEqual({ context, timedOut: false });
  expect({ context, ok: reply.status !== undefined && reply.status >= 400 && reply.status < 500 }).toEqual({ context, ok: true });
  expect({ context, requestId: typeof reply.headers["x-request-id"] }).toEqual({ context, requestId: "string" });
  if (what.startsWith("HEAD ")) return; // no body, by definition
  const error = httpError(JSON.parse(reply.body || "null"));
  expect({ context, reason: typeof error?.errorInfo?.reason, requestId: error?.errorInfo?.metadata.requestId }).toEqual({
    context,
    reason: "string",
    requestId: reply.headers["x-request-id"],
  });
}

test("malformed HTTP/1.1 requests get a 4xx in the error shape and change nothing", async () => {
  const before = await snapshot();
  const cases: Array<[what: string, bytes: string]> = [];
  for (const [segments, methods] of ROUTES) {
    for (let position = 0; position < segments.length; position++) {
      for (const broken of BROKEN_SEGMENTS) {
        const path = "/" + segments.map((s, i) => (i === position ? broken : s === "{id}" ? modelId : s)).join("/");
        for (const method of methods) {
          for (const token of [alice.token, undefined]) {
            const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
            if (method === "POST" && segments[0] !== "v1") headers["content-type"] = "application/json";
            cases.push([`${method} ${path.slice(0, 80)}${token ? " (token)" : ""}`, request(method, path, headers, method === "POST" || method === "PUT" ? "{}" : "")]);
          }
        }
      }
    }
  }
  // Odd methods, on routes and elsewhere.
  for (const method of ["DELETE", "PATCH", "TRACE", "PROPFIND", "BREW", "M-SEARCH", "get", "CONNECT"]) {
    for (const path of [`/v1/voice-models/${modelId}/file`, `${SERVICE}/GetActiveVoiceModel`, "/", "/nowhere"]) {
      cases.push([`${method} ${path}`, request(method, path, { authorization: `Bearer ${alice.token}` })]);
    }
  }
  // Broken and huge headers, broken request lines.
  const auth = `Bearer ${alice.token}`;
  cases.push(
    ["huge header", request("GET", `/v1/voice-models/${modelId}/file`, { authorization: auth, "x-big": "a".repeat(40_000) })],
    ["many headers", request("GET", "/healthz", Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`x-h${i}`, "v"])))],
    ["header without colon", `GET /healthz HTTP/1.1\r\nhost: x\r\nbroken header\r\n\r\n`],
    ["control byte in header", `GET /healthz HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n`],
    ["space in header name", `GET /healthz HTTP/1.1\r\nhost: x\r\nx bad: a\r\n\r\n`],
    ["two content-lengths", `POST ${SERVICE}/GetVoiceModel HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}`],
    ["chunked plus length", `POST ${SERVICE}/GetVoiceModel HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 2\r\n\r\n{}`],
    ["bad chunk size", `POST ${SERVICE}/GetVoiceModel HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`],
    ["bad request line", `GET\r\n\r\n`],
    ["no version", `GET /healthz\r\n\r\n`],
    ["http/9", `GET /healthz HTTP/9.9\r\nhost: x\r\n\r\n`],
    ["garbage", randomBytes(200).toString("latin1") + "\r\n\r\n"],
    ["huge authorization", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: `Bearer ${"a".repeat(12_000)}`, "content-type": "application/json" }, "{}")],
    ["latin1 token", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: "Bearer \xe9\xff\xfe", "content-type": "application/json" }, "{}")],
    ["odd authorization", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: "Basic a b c", "content-type": "application/json" }, "{}")],
    ["odd host", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: auth, "content-type": "application/json", host: "[::1" }, "{}")],
    ["bad timeout", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: auth, "content-type": "application/json", "connect-timeout-ms": "soon" }, "{}")],
    ["not gzip", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: auth, "content-type": "application/json", "content-encoding": "gzip" }, "{}")],
    ["unknown encoding", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: auth, "content-type": "application/json", "content-encoding": "zz" }, "{}")],
    ["odd request id", request("POST", `${SERVICE}/GetActiveVoiceModel`, { authorization: auth, "content-type": "application/json", "x-request-id": "<script>" }, "{x")],
    ["range garbage", request("GET", `/v1/voice-models/${modelId}/file`, { authorization: auth, range: "bytes=zz-" })],
  );
  // Garbage bodies and wrong content types on unary RPCs and on the upload and import routes.
  const bodies = ["{", "null", "[]", '{"modelId":1}', '{"unknownField":1}', '"\\ud800"', randomBytes(64).toString("latin1"), "[".repeat(5000), '{"modelId":"\\u0000"}'];
  const types = ["application/json", "application/proto", "application/grpc-web+proto", "application/grpc-web+json", "text/plain", "application/connect+json", "multipart/form-data"];
  for (const method of ["GetVoiceModel", "CreateVoiceModel", "ListVoiceModels", "UpdateVoiceModel"]) {
    for (const type of types) {
      for (const body of bodies) cases.push([`${method} ${type} ${body.slice(0, 20)}`, request("POST", `${SERVICE}/${method}`, { authorization: auth, "content-type": type }, body)]);
    }
  }
  for (const body of bodies) cases.push([`import ${body.slice(0, 20)}`, request("POST", "/v1/voice-models/import", { authorization: auth }, body)]);

  const failures: string[] = [];
  const replies: RawReply[] = [];
  for (let i = 0; i < cases.length; i += 16) replies.push(...(await Promise.all(cases.slice(i, i + 16).map(([, bytes]) => rawHttp(bytes)))));
  for (const [index, [what]] of cases.entries()) {
    const reply = replies[index];
    // node:http answers unparseable requests itself (through our clientError handler) and
    // closes: those replies follow the same shape.
    // CONNECT asks for a tunnel: node:http closes the socket (no listener takes it). An unknown
    // content-encoding is 501 UNIMPLEMENTED, as the Connect protocol says.
    if (what.startsWith("CONNECT ") && reply.status === undefined && !reply.timedOut) continue;
    if (what === "unknown encoding" && reply.status === 501) {
      expect(httpError(JSON.parse(reply.body))?.errorInfo?.reason).toBe("UNIMPLEMENTED");
      continue;
    }
    if (reply.status === undefined || reply.status >= 500 || reply.timedOut) failures.push(`${what}: ${reply.status} ${reply.body.slice(0, 120)}`);
    else if (reply.status >= 400) {
      try {
        expectErrorReply(reply, what);
      } catch (error) {
        failures.push(`${what}: ${reply.status} ${reply.headers["content-type"]} ${reply.body.slice(0, 120)}`);
      }
    }
  }
  expect(failures).toEqual([]);
  expect(cases.length).toBeGreaterThan(300);

  // Bodies cut short: the client leaves mid-body; the server must only drop that request.
  for (const path of [`${SERVICE}/CreateVoiceModel`, `/v1/voice-models/${modelId}/file`, "/v1/voice-models/import"]) {
    const method = path.includes("/file") ? "PUT" : "POST";
    const head = `${method} ${path} HTTP/1.1\r\nhost: x\r\nauthorization: ${auth}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"prov`;
    const reply = await rawHttp(head, { endAfterWrite: true });
    expect({ path, timedOut: reply.timedOut }).toEqual({ path, timedOut: false });
    if (reply.status !== undefined) expect({ path, status: reply.status < 500 }).toEqual({ path, status: true });
  }

  expect(await snapshot()).toEqual(before);
  await expectStillServing();
}, 120_000);

/** Sends one gRPC call on its own HTTP/2 session and reports the status and trailers. */
function rawGrpc(path: string, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<{ grpcStatus?: string; headers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${server().grpcPort}`);
    session.on("error", reject);
    const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
    let all: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (all = { ...all, ...h }));
    stream.on("trailers", (h) => (all = { ...all, ...h }));
    stream.on("data", () => undefined);
    const timer = setTimeout(() => stream.close(), 10_000);
    stream.on("close", () => {
      clearTimeout(timer);
      session.close();
      resolve({ grpcStatus: all["grpc-status"] as string | undefined, headers: all });
    });
    stream.on("error", () => undefined);
    stream.end(body);
  });
}

const frame = (message: Buffer, flag = 0, length = message.length) => {
  const prefix = Buffer.alloc(5);
  prefix[0] = flag;
  prefix.writeUInt32BE(length, 1);
  return Buffer.concat([prefix, message]);
};

test("malformed gRPC requests answer a status, undecodable messages INVALID_ARGUMENT with the request id", async () => {
  const before = await snapshot();
  const auth = { authorization: `Bearer ${alice.token}` };
  const garbage = [Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), Buffer.from([0x0a, 0x50, 0x41]), Buffer.from([0x0a, 0x02, 0xc3, 0x28]), randomBytes(40)];
  // An undecodable message is the caller's mistake: INVALID_ARGUMENT, ErrorInfo, x-request-id.
  for (const method of ["GetVoiceModel", "CreateVoiceModel", "ReadModelFile", "UploadModelFile"]) {
    for (const bytes of garbage.slice(0, 2)) {
      const reply = await rawGrpc(`${SERVICE}/${method}`, auth, frame(bytes));
      const context = `${method} ${bytes.toString("hex")}`;
      expect({ context, status: reply.grpcStatus }).toEqual({ context, status: String(Code.InvalidArgument) });
      const status = fromBinary(StatusSchema, Buffer.from(reply.headers["grpc-status-details-bin"] as string, "base64"));
      const info = anyUnpack(status.details[0], ErrorInfoSchema);
      expect(info?.reason).toBe("INVALID_ARGUMENT");
      expect(info?.metadata.requestId).toBe(reply.headers["x-request-id"]);
    }
  }
  // A trailers-only refusal carries the request id too.
  const refused = await rawGrpc(`${SERVICE}/GetActiveVoiceModel`, {}, frame(Buffer.alloc(0)));
  expect(refused.grpcStatus).toBe(String(Code.Unauthenticated));
  expect(typeof refused.headers["x-request-id"]).toBe("string");

  // Everything else: framing, compression, headers, paths. Each call must end with a status.
  const odd: Array<[string, http2.OutgoingHttpHeaders, Buffer]> = [
    ["short frame", auth, Buffer.from([0, 0, 0])],
    ["length past the body", auth, frame(Buffer.from("ab"), 0, 1000)],
    ["compressed without encoding", auth, frame(Buffer.from("ab"), 1)],
    ["bad gzip", { ...auth, "grpc-encoding": "gzip" }, frame(Buffer.from("not gzip"), 1)],
    ["unknown encoding", { ...auth, "grpc-encoding": "zz" }, frame(Buffer.alloc(0))],
    ["bad timeout", { ...auth, "grpc-timeout": "soon" }, frame(Buffer.alloc(0))],
    ["wrong content type", { ...auth, "content-type": "text/plain" }, frame(Buffer.alloc(0))],
    ["huge metadata", { ...auth, "x-big": "a".repeat(12_000) }, frame(Buffer.alloc(0))],
    ["two messages to unary", auth, Buffer.concat([frame(Buffer.alloc(0)), frame(Buffer.alloc(0))])],
    ["garbage token", { authorization: "Bearer \u00e9\u00ff" }, frame(Buffer.alloc(0))],
    ["bad request id", { ...auth, "x-request-id": "a".repeat(5000) }, frame(Buffer.alloc(0))],
    ["invalid utf-8 string", auth, frame(garbage[2])],
  ];
  for (const path of [`${SERVICE}/GetActiveVoiceModel`, `${SERVICE}/Nope`, "/nowhere", `${SERVICE}/ReadModelFile`]) {
    for (const [what, headers, body] of odd) {
      const reply = await rawGrpc(path, headers, body);
      expect({ what, path, answered: reply.grpcStatus !== undefined || reply.headers[":status"] !== undefined }).toEqual({ what, path, answered: true });
    }
  }
  expect(await snapshot()).toEqual(before);
  await expectStillServing();
}, 120_000);

async function expectStillServing() {
  expect((await server().fetch("/healthz")).status).toBe(200);
  expect((await server().call("grpc", "getVoiceModel", { modelId }, alice.token)).code).toBe(0);
  expect((await server().call("connect", "getVoiceModel", { modelId }, alice.token)).code).toBe(0);
}

test("an undecodable gRPC-Web body gets the ErrorInfo and request id of every other error", async () => {
  const reply = await fetch(`${server().baseUrl}${SERVICE}/GetVoiceModel`, {
    method: "POST",
    headers: { authorization: `Bearer ${alice.token}`, "content-type": "application/grpc-web+proto" },
    body: Buffer.from([0, 0, 0, 0, 3, 0xff, 0xff, 0xff]),
  });
  const requestId = reply.headers.get("x-request-id");
  const body = Buffer.from(await reply.arrayBuffer());
  expect(body[0]).toBe(0x80);
  const trailer = Object.fromEntries(
    body
      .subarray(5)
      .toString()
      .split("\r\n")
      .filter(Boolean)
      .map((line) => [line.slice(0, line.indexOf(":")).toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]),
  );
  expect(trailer["grpc-status"]).toBe(String(Code.InvalidArgument));
  const status = fromBinary(StatusSchema, Buffer.from(trailer["grpc-status-details-bin"], "base64"));
  expect(anyUnpack(status.details[0], ErrorInfoSchema)?.metadata.requestId).toBe(requestId);
});
