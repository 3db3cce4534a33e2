import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { ErrorCodes } from "../src/errors";
import { expectErrorInfo, expectRpcError, type ExpectedError } from "./helpers/expect-error";
import { createModel, TRANSPORTS, uniqueUser, useTestServer, type Actor, type MethodName } from "./helpers/harness";
import { userToken } from "./helpers/tokens";

const server = useTestServer();
const MISSING = "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11";

interface ErrorCase extends ExpectedError {
  name: string;
  http: number;
  connectCode: string;
  /** Makes the failing call's method, request and token. */
  setup(alice: Actor, bob: Actor): Promise<[MethodName, object, string | undefined]>;
}

const CASES: ErrorCase[] = [
  {
    name: "VOICE_MODEL_NOT_FOUND",
    code: Code.NotFound,
    reason: "VOICE_MODEL_NOT_FOUND",
    modelId: MISSING,
    message: MISSING,
    http: 404,
    connectCode: "not_found",
    setup: async (alice) => ["getVoiceModel", { modelId: MISSING }, alice.token],
  },
  {
    name: "ACCESS_DENIED (another user's model)",
    code: Code.PermissionDenied,
    reason: "ACCESS_DENIED",
    http: 403,
    connectCode: "permission_denied",
    setup: async (alice, bob) => {
      const model = await createModel(bob);
      return ["getVoiceModel", { modelId: model.id }, alice.token];
    },
  },
  {
    name: "ACCESS_DENIED (another user id)",
    code: Code.PermissionDenied,
    reason: "ACCESS_DENIED",
    field: "userId",
    http: 403,
    connectCode: "permission_denied",
    setup: async (alice, bob) => ["listVoiceModels", { userId: bob.userId }, alice.token],
  },
  {
    name: "UNAUTHENTICATED",
    code: Code.Unauthenticated,
    reason: "UNAUTHENTICATED",
    http: 401,
    connectCode: "unauthenticated",
    setup: async () => ["getActiveVoiceModel", {}, undefined],
  },
  {
    name: "INVALID_ARGUMENT",
    code: Code.InvalidArgument,
    reason: "INVALID_ARGUMENT",
    field: "modelId",
    message: /modelId/,
    http: 400,
    connectCode: "invalid_argument",
    setup: async (alice) => ["getVoiceModel", { modelId: "not-a-uuid" }, alice.token],
  },
  {
    name: "MODEL_NOT_COMPLETED",
    code: Code.FailedPrecondition,
    reason: "MODEL_NOT_COMPLETED",
    http: 400,
    connectCode: "failed_precondition",
    setup: async (alice) => {
      const model = await createModel(alice, { status: "pending" });
      return ["activateVoiceModel", { modelId: model.id }, alice.token];
    },
  },
  {
    name: "ALREADY_ACTIVE",
    code: Code.AlreadyExists,
    reason: "ALREADY_ACTIVE",
    http: 409,
    connectCode: "already_exists",
    setup: async (alice) => {
      const model = await createModel(alice);
      return ["activateVoiceModel", { modelId: model.id }, alice.token];
    },
  },
  {
    name: "ETAG_MISMATCH",
    code: Code.Aborted,
    reason: "ETAG_MISMATCH",
    field: "etag",
    http: 409,
    connectCode: "aborted",
    setup: async (alice) => {
      const model = await createModel(alice);
      return ["updateVoiceModel", { modelId: model.id, qualityScore: 0.5, etag: "v999" }, alice.token];
    },
  },
];

describe.each(TRANSPORTS)("every error code over %s", (transport) => {
  test.each(CASES)("$name", async (c) => {
    const alice = await server().actor();
    const bob = await server().actor();
    const [method, request, token] = await c.setup(alice, bob);
    const outcome = await server().call(transport, method, request, token);
    expectRpcError(outcome, c);
    const id = (request as { modelId?: string }).modelId;
    if (c.reason !== "INVALID_ARGUMENT" && c.reason !== "UNAUTHENTICATED" && c.field === undefined) {
      // Errors about a model name it, in the metadata and the message.
      expect(outcome.errorInfo!.metadata.modelId).toBe(id);
      expect(outcome.errorMessage).toContain(id);
    }
  });
});

describe("Connect JSON over plain HTTP", () => {
  test.each(CASES)("$name is HTTP $http with a JSON error body", async (c) => {
    const alice = await server().actor();
    const bob = await server().actor();
    const [method, request, token] = await c.setup(alice, bob);
    const rpc = VoiceModelService.methods.find((m) => m.localName === method)!.name;
    const response = await server().rpcJson(rpc, request, token);
    expect(response.status).toBe(c.http);
    expect(response.headers.get("content-type")).toMatch(/application\/json/);
    const requestId = response.headers.get("x-request-id");
    expect(requestId).toBeTruthy();
    expect(response.body.code).toBe(c.connectCode);
    expect(typeof response.body.message).toBe("string");
    expect(response.body.details).toHaveLength(1);
    expect(response.body.details[0].type).toBe("google.rpc.ErrorInfo");
    const info = fromBinary(ErrorInfoSchema, Buffer.from(response.body.details[0].value, "base64"));
    expectErrorInfo(info, c, requestId!);
  });

  test("JSON replies emit fields at their defaults; counts are numbers", async () => {
    const token = await userToken(uniqueUser());
    const empty = await server().rpcJson("ListVoiceModels", {}, token);
    expect(empty.status).toBe(200);
    expect(empty.body).toEqual({ models: [], total: 0, nextPageToken: "" });
    expect(empty.text).toMatch(/"total":0/);

    const none = await server().rpcJson("GetActiveVoiceModel", {}, token);
    expect(none.status).toBe(200);
    expect(none.body).toEqual({}); // no active model is not an error

    const created = await server().rpcJson("CreateVoiceModel", { provider: "xtts-v2", modelPath: "m.pth", status: "pending" }, token);
    expect(created.status).toBe(200);
    const model = created.body.model;
    expect(model).toMatchObject({
      provider: "xtts-v2",
      modelPath: "m.pth",
      sampleRate: 22050,
      qualityScore: 0,
      metadata: {},
      isActive: false,
      status: "pending",
    });
    expect(model.createdAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    expect(model.updatedAt).toMatch(/Z$/);
    expect(model).not.toHaveProperty("deletedAt");
    expect(model).not.toHaveProperty("trainingJobId");
    expect(typeof model.id).toBe("string");
    expect(typeof model.etag).toBe("string");

    const listed = await server().rpcJson("ListVoiceModels", { isActive: false, minQualityScore: 0 }, token);
    expect(listed.body.total).toBe(1);
    expect(listed.body.models[0].isActive).toBe(false);
  });

  test("camelCase JSON requests, a JSON field mask and the delete reply", async () => {
    const token = await userToken(uniqueUser());
    const created = await server().rpcJson(
      "CreateVoiceModel",
      { provider: "openai-tts", modelPath: "a", sampleRate: 24000, qualityScore: 0.4567, metadata: { lang: "en", n: 2 }, trainingJobId: "j1" },
      token,
    );
    expect(created.body.model).toMatchObject({ sampleRate: 24000, qualityScore: 0.457, metadata: { lang: "en", n: 2 }, trainingJobId: "j1", isActive: true });
    const id = created.body.model.id;
    const updated = await server().rpcJson("UpdateVoiceModel", { modelId: id, qualityScore: 0.9, sampleRate: 8000, updateMask: "qualityScore" }, token);
    expect(updated.status).toBe(200);
    expect(updated.body.model).toMatchObject({ qualityScore: 0.9, sampleRate: 24000 });
    const second = await server().rpcJson("CreateVoiceModel", { provider: "xtts-v2", modelPath: "b", qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5 } }, token);
    expect(second.body.model).toMatchObject({ qualityScore: 0.5, qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5 } });
    const deleted = await server().rpcJson("DeleteVoiceModel", { modelId: id }, token);
    expect(deleted.status).toBe(200);
    expect(deleted.body.activeModelId).toBe(second.body.model.id);
    expect(deleted.body.model.deletedAt).toMatch(/Z$/);
    expect(deleted.body.model.isActive).toBe(false);
  });

  test("a JSON value of the wrong type is 400 and creates nothing", async () => {
    const token = await userToken(uniqueUser());
    const wrongType = await server().rpcJson("CreateVoiceModel", { provider: "xtts-v2", modelPath: "a", sampleRate: "fast" }, token);
    expect(wrongType.status).toBe(400);
    expect((await server().rpcJson("ListVoiceModels", {}, token)).body.total).toBe(0);
  });
});

describe("x-request-id", () => {
  test.each(TRANSPORTS)("every RPC answers with one over %s, even when refused", async (transport) => {
    for (const method of VoiceModelService.methods) {
      const outcome = await server().call(transport, method.localName as MethodName, {}, undefined);
      expect({ method: method.name, code: outcome.code }).toEqual({ method: method.name, code: Code.Unauthenticated });
      expect(outcome.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(outcome.errorInfo!.metadata.requestId).toBe(outcome.requestId);
    }
  });

  test.each(TRANSPORTS)("successful calls carry one over %s", async (transport) => {
    const alice = await server().actor();
    const call = async (method: MethodName, request: object) => {
      const outcome = await server().call(transport, method, request, alice.token);
      expect({ method, code: outcome.code }).toEqual({ method, code: 0 });
      expect(outcome.requestId).toMatch(/^[0-9a-f-]{36}$/);
      return outcome.message;
    };
    const { model } = await call("createVoiceModel", { provider: "xtts-v2", modelPath: "x" });
    const other = (await call("createVoiceModel", { provider: "xtts-v2", modelPath: "y" })).model;
    await call("getVoiceModel", { modelId: model.id });
    await call("listVoiceModels", {});
    await call("updateVoiceModel", { modelId: model.id, qualityScore: 0.3 });
    await call("activateVoiceModel", { modelId: other.id });
    await call("deactivateVoiceModel", { modelId: other.id });
    await call("getActiveVoiceModel", {});
    await call("whoAmI", {});
    await call("deleteVoiceModel", { modelId: model.id });
  });

  test.each(TRANSPORTS)("a sane client request id is echoed over %s, an unsafe one replaced", async (transport) => {
    const alice = await server().actor();
    const ok = await server().call(transport, "getActiveVoiceModel", {}, alice.token, { "x-request-id": "trace-abc.123:4" });
    expect(ok.requestId).toBe("trace-abc.123:4");
    const failed = await server().call(transport, "getVoiceModel", { modelId: MISSING }, alice.token, { "x-request-id": "trace-err-1" });
    expect(failed.requestId).toBe("trace-err-1");
    expect(failed.errorInfo!.metadata.requestId).toBe("trace-err-1");
    const unsafe = await server().call(transport, "getActiveVoiceModel", {}, alice.token, { "x-request-id": "a b<script>" });
    expect(unsafe.requestId).toMatch(/^[0-9a-f-]{36}$/);
    const long = await server().call(transport, "getActiveVoiceModel", {}, alice.token, { "x-request-id": "x".repeat(200) });
    expect(long.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("gRPC replies and errors carry it in the trailers, matching the ErrorInfo", async () => {
    const alice = await server().actor();
    let error: any;
    await alice.grpc.getVoiceModel({ modelId: MISSING }).catch((e) => (error = e));
    const trailer = error.trailers.get("x-request-id")[0];
    expect(trailer).toMatch(/^[0-9a-f-]{36}$/);
    expect(error.errorInfo.metadata.requestId).toBe(trailer);
    const ok = await server().call("grpc", "whoAmI", {}, alice.token);
    expect(ok.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });
});

test("the closed list of error codes maps each code to one status", () => {
  expect(ErrorCodes).toMatchObject({
    VOICE_MODEL_NOT_FOUND: Code.NotFound,
    ACCESS_DENIED: Code.PermissionDenied,
    UNAUTHENTICATED: Code.Unauthenticated,
    INVALID_ARGUMENT: Code.InvalidArgument,
    MODEL_NOT_COMPLETED: Code.FailedPrecondition,
    ALREADY_ACTIVE: Code.AlreadyExists,
    ETAG_MISMATCH: Code.Aborted,
    RATE_LIMITED: Code.ResourceExhausted,
    SERVICE_UNAVAILABLE: Code.Unavailable,
  });
});
