import * as grpc from "@grpc/grpc-js";
import { Code, createClient } from "@connectrpc/connect";
import { compressionGzip, createConnectTransport } from "@connectrpc/connect-node";
import { randomBytes } from "node:crypto";
import { service as healthService } from "grpc-health-check";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { expectConnectError, expectGrpcError } from "./helpers/expect-error";
import { bearer, grpcWebClient } from "./helpers/connect-client";
import { createModel, useTestServer } from "./helpers/harness";
import { grpcStreamingClient } from "./helpers/streaming-client";

const ORIGIN = "https://app.example.com";
const server = useTestServer({ env: { CORS_ORIGINS: `${ORIGIN},https://other.example.com` } });

describe("grpc.health.v1.Health (no token)", () => {
  let client: grpc.Client & Record<string, Function>;
  beforeAll(() => {
    const Health = grpc.makeGenericClientConstructor(healthService, "Health");
    client = new Health(`127.0.0.1:${server().grpcPort}`, grpc.credentials.createInsecure()) as never;
  });
  afterAll(() => client.close());

  const check = (service: string) =>
    new Promise<{ status: string } | grpc.ServiceError>((resolve) =>
      client.check({ service }, (error: grpc.ServiceError | null, reply: { status: string }) => resolve(error ?? reply)),
    );

  test.each(["", "voicemodel.v1.VoiceModelService"])("Check(%j) is SERVING", async (service) => {
    expect(await check(service)).toMatchObject({ status: "SERVING" });
  });

  test("an unknown service is NOT_FOUND", async () => {
    expect(await check("no.such.Service")).toMatchObject({ code: grpc.status.NOT_FOUND });
  });
});

describe("HTTP probes (no token)", () => {
  test("/healthz says the process is up", async () => {
    const response = await server().fetch("/healthz");
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ status: "ok" });
  });

  test("/readyz says the database answers", async () => {
    const response = await server().fetch("/readyz");
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ status: "ready", blobStore: { status: expect.stringMatching(/^(unknown|up)$/), checkedAt: expect.anything() } });
  });
});

describe("CORS for configured origins", () => {
  test("a preflight from an allowed origin allows the authorization and Connect headers", async () => {
    const response = await server().fetch(`/${VoiceModelService.typeName}/ListVoiceModels`, {
      method: "OPTIONS",
      headers: { origin: ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type" },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    const allowed = response.headers.get("access-control-allow-headers")!.toLowerCase();
    for (const header of ["authorization", "content-type", "connect-protocol-version", "x-request-id"]) expect(allowed).toContain(header);
    expect(response.headers.get("access-control-allow-methods")).toContain("POST");
  });

  test("replies to an allowed origin expose x-request-id and the grpc status headers", async () => {
    const alice = await server().actor();
    const response = await server().rpcJson("ListVoiceModels", {}, alice.token, { origin: ORIGIN });
    expect(response.status).toBe(200);
    expect(response.headers.get("access-control-allow-origin")).toBe(ORIGIN);
    const exposed = response.headers.get("access-control-expose-headers")!.toLowerCase();
    for (const header of ["x-request-id", "grpc-status", "grpc-message"]) expect(exposed).toContain(header);
  });

  test("another origin gets no CORS headers", async () => {
    const alice = await server().actor();
    const response = await server().rpcJson("ListVoiceModels", {}, alice.token, { origin: "https://evil.example.net" });
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    const preflight = await server().fetch(`/${VoiceModelService.typeName}/ListVoiceModels`, {
      method: "OPTIONS",
      headers: { origin: "https://evil.example.net", "access-control-request-method": "POST" },
    });
    expect(preflight.headers.get("access-control-allow-origin")).toBeNull();
  });
});

describe("gRPC-Web on the HTTP/1.1 listener", () => {
  test("serves the same RPCs with the same errors", async () => {
    const alice = await server().actor();
    const web = grpcWebClient(VoiceModelService, server().baseUrl, alice.token);
    const created = await web.createVoiceModel({ provider: "xtts-v2", modelPath: "web.pth" });
    expect(created.model).toMatchObject({ isActive: true, userId: alice.userId });
    const got = await alice.grpc.getVoiceModel({ modelId: created.model!.id });
    expect(got.message.model!.id).toBe(created.model!.id);
    const error = await expectConnectError(web.activateVoiceModel({ modelId: created.model!.id }), {
      code: Code.AlreadyExists,
      reason: "ALREADY_ACTIVE",
      modelId: created.model!.id,
    });
    expect(error.metadata.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("one implementation, two transports", () => {
  test("a model written over gRPC reads the same over Connect JSON, and back", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { qualityScore: 0.42, metadata: { a: [1, "two", { three: 3 }] }, sampleRate: 44100 });
    expect((await alice.connect.getVoiceModel({ modelId: model.id })).model).toEqual(model);
    const updated = await alice.connect.updateVoiceModel({ modelId: model.id, metadata: { b: true } });
    expect((await alice.grpc.getVoiceModel({ modelId: model.id })).message.model).toEqual(updated.model);
  });

  test("a gRPC deadline that has passed is DEADLINE_EXCEEDED", async () => {
    const alice = await server().actor();
    let error: any;
    await alice.grpc.listVoiceModels({}, { deadlineMs: -1 }).catch((e) => (error = e));
    expect(error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });

  test("a service token's caller works over both transports", async () => {
    const training = await server().serviceActor();
    const userId = "user-from-service";
    await expectGrpcError(training.grpc.getActiveVoiceModel({}), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "userId" });
    const created = await training.connect.createVoiceModel({ userId, provider: "openai-tts", modelPath: "s.pth" });
    expect((await training.grpc.getActiveVoiceModel({ userId })).message.model!.id).toBe(created.model!.id);
  });
});

describe("Connect on the HTTP/1.1 listener (src/server/connect-adapter.ts)", () => {
  test("a JSON body that does not parse is invalid_argument and creates nothing", async () => {
    const alice = await server().actor();
    const response = await server().fetch(`/${VoiceModelService.typeName}/CreateVoiceModel`, {
      method: "POST",
      token: alice.token,
      body: '{"provider": "xtts-v2", "modelPath": "x.pth"',
    });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ code: "invalid_argument" });
    expect((await alice.connect.listVoiceModels({})).total).toBe(0);
  });

  test("a JSON body with an unknown field is refused with the field named", async () => {
    const alice = await server().actor();
    const response = await server().rpcJson("CreateVoiceModel", { provider: "xtts-v2", modelPath: "x.pth", colour: "blue" }, alice.token);
    expect(response.status).toBe(400);
    expect(response.body.message).toContain("colour");
    expect((await alice.connect.listVoiceModels({})).total).toBe(0);
  });

  test("gzip-compressed requests, in JSON and in the binary format, are served", async () => {
    const alice = await server().actor();
    for (const useBinaryFormat of [false, true]) {
      const transport = createConnectTransport({
        baseUrl: server().baseUrl,
        httpVersion: "1.1",
        useBinaryFormat,
        sendCompression: compressionGzip,
        compressMinBytes: 0,
        interceptors: [bearer(alice.token)],
      });
      const created = await createClient(VoiceModelService, transport).createVoiceModel({ provider: "openai-tts", modelPath: `gz-${useBinaryFormat}.pth` });
      expect(created.model!.userId).toBe(alice.userId);
    }
    expect((await alice.connect.listVoiceModels({})).total).toBe(2);
  });

  test("a unary request over 4 MiB is resource_exhausted and changes nothing; the connection goes on", async () => {
    const alice = await server().actor();
    const huge = { provider: "xtts-v2", modelPath: "big.pth", metadata: { notes: "x".repeat(5 * 1024 * 1024) } };
    const response = await server().rpcJson("CreateVoiceModel", huge, alice.token);
    expect(response.status).toBe(429);
    expect(response.body).toMatchObject({ code: "resource_exhausted" });
    expect(response.body.message).toMatch(/readMaxBytes/);
    expect((await alice.connect.listVoiceModels({})).total).toBe(0);
  });

  test("a path that names no RPC is 404", async () => {
    const alice = await server().actor();
    const response = await server().rpcJson("NoSuchMethod", {}, alice.token);
    expect(response.status).toBe(404);
  });

  test("a client that leaves in the middle of a server stream cancels it, over either transport; the server goes on serving", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const put = await fetch(`${server().baseUrl}/v1/voice-models/${model.id}/file`, {
      method: "PUT",
      headers: { authorization: `Bearer ${alice.token}` },
      body: randomBytes(8 * 1024 * 1024),
    });
    expect(put.status).toBe(200);
    const cancelledCount = async () => {
      const text = (await server().fetch("/metrics")).text;
      return Number(/voice_model_rpc_requests_total\{method="readModelFile",code="CANCELLED"\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    for (const [n, client] of [alice.connect, grpcStreamingClient(server().grpcPort, alice.token)].entries()) {
      const leaving = new AbortController();
      let messages = 0;
      await expect(
        (async () => {
          for await (const _ of client.readModelFile({ modelId: model.id }, { signal: leaving.signal })) {
            if (++messages === 1) leaving.abort();
          }
        })(),
      ).rejects.toMatchObject({ code: Code.Canceled });
      expect(messages).toBe(1);
      // The server saw the stream end early: a cancelled call, not a server error.
      for (let i = 0; i < 100 && (await cancelledCount()) < n + 1; i++) await new Promise((r) => setTimeout(r, 50));
      expect(await cancelledCount()).toBe(n + 1);
    }
    expect((await server().fetch("/metrics")).text).not.toMatch(/method="readModelFile",code="(INTERNAL|UNKNOWN)"/);
    expect((await alice.connect.getVoiceModel({ modelId: model.id })).model!.id).toBe(model.id);
  });
});
