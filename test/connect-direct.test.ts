import http from "node:http";
import { brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { createModel, useTestServer, type Actor } from "./helpers/harness";

// A unary Connect JSON POST with an uncompressed body is served without connect's own handler
// (server/connect-adapter.ts). The same request with a gzip body still goes through connect's:
// both must answer alike, and the direct path must compress its replies as connect does.
const server = useTestServer();
const SERVICE = "/voicemodel.v1.VoiceModelService";

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The body, decompressed as its content-encoding says. */
  json: any;
}

function post(method: string, body: string, headers: Record<string, string>, { gzipBody = false } = {}): Promise<Reply> {
  const payload = gzipBody ? gzipSync(body) : Buffer.from(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1",
        port: server().httpPort,
        method: "POST",
        path: `${SERVICE}/${method}`,
        headers: { "content-type": "application/json", "content-length": payload.length, ...(gzipBody ? { "content-encoding": "gzip" } : {}), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const raw = Buffer.concat(chunks);
          const encoding = res.headers["content-encoding"];
          const text = (encoding === "gzip" ? gunzipSync(raw) : encoding === "br" ? brotliDecompressSync(raw) : raw).toString("utf8");
          resolve({ status: res.statusCode!, headers: res.headers, json: JSON.parse(text) });
        });
      },
    );
    req.on("error", reject);
    req.end(payload);
  });
}

/** What must agree between the two paths: the request id and timestamp differ per call. */
function comparable(reply: Reply) {
  const { json } = reply;
  const outcome = json.code
    ? { code: json.code, message: json.message, details: (json.details ?? []).map((d: { type: string }) => d.type) }
    : json;
  return { status: reply.status, contentType: reply.headers["content-type"], retryAfter: reply.headers["retry-after"], outcome };
}

describe("Connect JSON unary calls served directly", () => {
  let owner: Actor;
  let auth: Record<string, string>;
  let modelId: string;

  beforeAll(async () => {
    owner = await server().actor();
    auth = { authorization: `Bearer ${owner.token}` };
    for (let i = 0; i < 8; i++) modelId = (await createModel(owner, { qualityScore: 0.5 + i / 100 })).id;
  });

  test.each([
    ["a list page (over 1 KiB)", "ListVoiceModels", () => JSON.stringify({ limit: 20 }), () => auth],
    ["a model", "GetVoiceModel", () => JSON.stringify({ modelId }), () => auth],
    ["the active model", "GetActiveVoiceModel", () => "{}", () => auth],
    ["an unknown field", "GetVoiceModel", () => JSON.stringify({ modelId, colour: "red" }), () => auth],
    ["JSON that does not parse", "GetVoiceModel", () => "{", () => auth],
    ["a field of the wrong type", "ListVoiceModels", () => JSON.stringify({ limit: "many" }), () => auth],
    ["a bad connect-timeout-ms", "ListVoiceModels", () => "{}", () => ({ ...auth, "connect-timeout-ms": "soon" })],
    ["no token", "ListVoiceModels", () => "{}", () => ({})],
    ["a model that does not exist", "GetVoiceModel", () => JSON.stringify({ modelId: "00000000-0000-4000-8000-000000000000" }), () => auth],
    ["a field that fails validation", "ListVoiceModels", () => JSON.stringify({ limit: -1 }), () => auth],
  ])("%s: the same reply as through connect's handler", async (_what, method, body, headers) => {
    const direct = await post(method, body(), headers());
    const throughConnect = await post(method, body(), headers(), { gzipBody: true });
    expect(comparable(direct)).toEqual(comparable(throughConnect));
    expect(direct.headers["x-request-id"]).toMatch(/\S/);
    if (direct.json.code) expect(direct.json.details?.[0]?.type).toBe("google.rpc.ErrorInfo");
  });

  test("the JSON of a reply is complete: fields at their defaults are shown", async () => {
    const { json } = await post("GetVoiceModel", JSON.stringify({ modelId }), auth);
    expect(json.model).toMatchObject({ id: modelId, isActive: false, metadata: {} });
  });

  test("a reply of 1 KiB or more is compressed as the client accepts (gzip, br); a smaller one is not", async () => {
    const list = JSON.stringify({ limit: 20 });
    const plain = await post("ListVoiceModels", list, auth);
    expect(plain.headers["content-encoding"]).toBeUndefined();
    expect(Number(plain.headers["content-length"])).toBeGreaterThanOrEqual(1024);

    const gzipped = await post("ListVoiceModels", list, { ...auth, "accept-encoding": "gzip, deflate, br" });
    expect(gzipped.headers["content-encoding"]).toBe("gzip");
    expect(Number(gzipped.headers["content-length"])).toBeLessThan(Number(plain.headers["content-length"]));
    expect(gzipped.json).toEqual(plain.json);

    const brotli = await post("ListVoiceModels", list, { ...auth, "accept-encoding": "br" });
    expect(brotli.headers["content-encoding"]).toBe("br");
    expect(brotli.json).toEqual(plain.json);

    const identity = await post("ListVoiceModels", list, { ...auth, "accept-encoding": "identity" });
    expect(identity.headers["content-encoding"]).toBeUndefined();

    const small = await post("GetActiveVoiceModel", "{}", { ...auth, "accept-encoding": "gzip" });
    expect(small.headers["content-encoding"]).toBeUndefined();
    expect(Number(small.headers["content-length"])).toBeLessThan(1024);
    expect(small.json.model.isActive).toBe(true);
  });
});
