import { fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import fs from "node:fs";
import path from "node:path";
import { ErrorCodes, type ErrorCode } from "../src/errors";
import { expectErrorInfo, expectRpcError, type ExpectedError } from "./helpers/expect-error";
import type { JsonResponse } from "./helpers/connect-client";
import { createModel, TRANSPORTS, uniqueUser, useTestServer, type Actor, type MethodName, type TestServer } from "./helpers/harness";
import { userToken } from "./helpers/tokens";

const server = useTestServer();
const MISSING = "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11";

interface ErrorCase extends Omit<ExpectedError, "code" | "reason"> {
  name: string;
  http: number;
  connectCode: string;
  /** A server-streaming call: not a plain JSON POST, so it is left out of the JSON cases. */
  streaming?: true;
  /** Makes the failing call's method, request and token. */
  setup(alice: Actor, bob: Actor, tts: Actor): Promise<[MethodName, object, string | undefined]>;
}

/** A code only the plain HTTP listener gives: the request that provokes it. */
interface HttpCase {
  name: string;
  http: number;
  connectCode: string;
  send(server: TestServer, token: string): Promise<JsonResponse>;
}

/** A code that needs a server of its own (settings, a fault): the file that provokes it through the server. */
interface CoveredElsewhere {
  coveredBy: string;
}

/** A code only a bug in the service gives (the listeners' catch-all answers an unexpected throw with it). */
interface BugOnly {
  bugOnly: true;
}

/**
 * Every code of the closed list (src/errors.ts), each provoked through the server here, or in the
 * test file named (which must name the code). A new code does not compile until it has an entry.
 */
const BY_CODE: Record<ErrorCode, ErrorCase[] | HttpCase | CoveredElsewhere | BugOnly> = {
  VOICE_MODEL_NOT_FOUND: [
    {
      name: "a missing model",
      modelId: MISSING,
      message: MISSING,
      http: 404,
      connectCode: "not_found",
      setup: async (alice) => ["getVoiceModel", { modelId: MISSING }, alice.token],
    },
  ],
  ACCESS_DENIED: [
    {
      name: "another user's model",
      http: 403,
      connectCode: "permission_denied",
      setup: async (alice, bob) => {
        const model = await createModel(bob);
        return ["getVoiceModel", { modelId: model.id }, alice.token];
      },
    },
    {
      name: "another user id",
      field: "userId",
      http: 403,
      connectCode: "permission_denied",
      setup: async (alice, bob) => ["listVoiceModels", { userId: bob.userId }, alice.token],
    },
  ],
  UNAUTHENTICATED: [
    {
      name: "no token",
      http: 401,
      connectCode: "unauthenticated",
      setup: async () => ["getActiveVoiceModel", {}, undefined],
    },
  ],
  INVALID_ARGUMENT: [
    {
      name: "an id that is not a UUID",
      field: "modelId",
      message: /modelId/,
      http: 400,
      connectCode: "invalid_argument",
      setup: async (alice) => ["getVoiceModel", { modelId: "not-a-uuid" }, alice.token],
    },
  ],
  MODEL_NOT_COMPLETED: [
    {
      name: "activating a pending model",
      http: 400,
      connectCode: "failed_precondition",
      setup: async (alice) => {
        const model = await createModel(alice, { status: "pending" });
        return ["activateVoiceModel", { modelId: model.id }, alice.token];
      },
    },
  ],
  ALREADY_ACTIVE: [
    {
      name: "activating the active model",
      http: 409,
      connectCode: "already_exists",
      setup: async (alice) => {
        const model = await createModel(alice);
        return ["activateVoiceModel", { modelId: model.id }, alice.token];
      },
    },
  ],
  IDEMPOTENCY_KEY_REUSED: [
    {
      name: "a usage key reused with another payload",
      field: "idempotencyKey",
      http: 409,
      connectCode: "already_exists",
      setup: async (alice, _bob, tts) => {
        const model = await createModel(alice);
        const event = { modelId: model.id, userId: alice.userId, characters: 10n, latencyMs: 5, cost: 1, idempotencyKey: `k-${model.id}` };
        await tts.grpc.recordUsage(event);
        return ["recordUsage", { ...event, cost: 2 }, tts.token];
      },
    },
  ],
  ETAG_MISMATCH: [
    {
      name: "a stale etag",
      field: "etag",
      http: 409,
      connectCode: "aborted",
      setup: async (alice) => {
        const model = await createModel(alice);
        return ["updateVoiceModel", { modelId: model.id, qualityScore: 0.5, etag: "v999" }, alice.token];
      },
    },
  ],
  ACTIVE_MODEL_CHANGED: { coveredBy: "activation-history.test.ts" },
  HISTORY_ENTRY_NOT_FOUND: { coveredBy: "activation-history.test.ts" },
  NOTHING_TO_ROLL_BACK: { coveredBy: "activation-history.test.ts" },
  ROLLBACK_TARGET_DELETED: { coveredBy: "activation-history.test.ts" },
  ROLLBACK_TARGET_GONE: { coveredBy: "activation-history.test.ts" },
  SHARING_DISABLED: { coveredBy: "governance/sharing.test.ts" },
  BACKUP_NOT_FOUND: [
    {
      name: "restoring a backup that does not exist",
      http: 404,
      connectCode: "not_found",
      setup: async (alice) => ["restoreBackup", { backupPath: `backups/${alice.userId}/${MISSING}.vmb` }, alice.token],
    },
  ],
  MODEL_FILE_MISSING: [
    {
      name: "reading the file of a model that has none",
      streaming: true,
      http: 400,
      connectCode: "failed_precondition",
      setup: async (alice) => {
        const model = await createModel(alice);
        return ["readModelFile", { modelId: model.id }, alice.token];
      },
    },
  ],
  FILE_CORRUPT: { coveredBy: "model-files/model-files.test.ts" },
  RATE_LIMITED: { coveredBy: "governance/rate-limits.test.ts" },
  REQUEST_TOO_LARGE: {
    name: "a Connect body over the 4 MiB read limit",
    http: 429,
    connectCode: "resource_exhausted",
    send: (server, token) => server.rpcJson("CreateVoiceModel", { provider: "xtts-v2", modelPath: "x".repeat(5 * 1024 * 1024) }, token),
  },
  ROUTE_NOT_FOUND: {
    name: "a path no route serves",
    http: 404,
    connectCode: "not_found",
    send: (server, token) => server.fetch("/v1/no-such-route", { headers: { authorization: `Bearer ${token}` } }),
  },
  SERVICE_UNAVAILABLE: { coveredBy: "database-faults.test.ts" },
  STORAGE_UNAVAILABLE: { coveredBy: "storage/blob-store-outage.test.ts" },
  STORAGE_FULL: { coveredBy: "storage/disk-full.test.ts" },
  DEADLINE_EXCEEDED: { coveredBy: "deadlines.test.ts" },
  SHUTTING_DOWN: { coveredBy: "shutdown.test.ts" },
  USER_ERASED: { coveredBy: "backups/erasure-leaves-no-id.test.ts" },
  STREAM_STALLED: { coveredBy: "transport-limits.test.ts" },
  EVENTS_EXPIRED: { coveredBy: "events/resume.test.ts" },
  CONSENT_MISSING: { coveredBy: "consent.test.ts" },
  CONSENT_NOT_FOUND: { coveredBy: "consent.test.ts" },
  CONSENT_EXISTS: { coveredBy: "consent.test.ts" },
  CONSENT_RECORDING_MISSING: { coveredBy: "consent.test.ts" },
  BACKUP_REWRITE_PENDING: { coveredBy: "consent.test.ts" },
  UPLOAD_NOT_FOUND: { coveredBy: "model-files/chunked-upload.test.ts" },
  UPLOAD_OFFSET_MISMATCH: { coveredBy: "model-files/chunked-upload.test.ts" },
  UPLOAD_INCOMPLETE: { coveredBy: "model-files/chunked-upload.test.ts" },
  UNIMPLEMENTED: { coveredBy: "malformed-requests.test.ts" },
  INTERNAL: { bugOnly: true },
};

const ENTRIES = Object.entries(BY_CODE) as [ErrorCode, (typeof BY_CODE)[ErrorCode]][];
const CASES = ENTRIES.flatMap(([reason, entry]) =>
  Array.isArray(entry) ? entry.map((c) => ({ ...c, name: `${reason} (${c.name})`, reason, code: ErrorCodes[reason] })) : [],
);
const HTTP_CASES = ENTRIES.flatMap(([reason, entry]) => ("send" in entry ? [{ ...entry, name: `${reason} (${entry.name})`, reason, code: ErrorCodes[reason] }] : []));
const ELSEWHERE = ENTRIES.flatMap(([reason, entry]) => ("coveredBy" in entry ? [[reason, entry.coveredBy] as const] : []));

test.each(ELSEWHERE)("%s is provoked through the server in %s", (reason, coveredBy) => {
  expect(fs.readFileSync(path.join(__dirname, coveredBy), "utf8")).toContain(reason);
});

/** A request as Connect JSON writes it (int64 fields as strings). */
const asJson = (request: object) => JSON.parse(JSON.stringify(request, (_key, value) => (typeof value === "bigint" ? value.toString() : value)));

describe.each(TRANSPORTS)("every error code over %s", (transport) => {
  test.each(CASES)("$name", async (c) => {
    const [method, request, token] = await c.setup(await server().actor(), await server().actor(), await server().serviceActor());
    const outcome = await server().call(transport, method, request, token);
    expectRpcError(outcome, c);
    const id = (request as { modelId?: string }).modelId;
    if (id !== undefined && c.reason !== "INVALID_ARGUMENT" && c.reason !== "UNAUTHENTICATED" && c.field === undefined) {
      // Errors about a model name it, in the metadata and the message.
      expect(outcome.errorInfo!.metadata.modelId).toBe(id);
      expect(outcome.errorMessage).toContain(id);
    }
  });
});

describe("Connect JSON over plain HTTP", () => {
  test.each([...CASES.filter((c) => !c.streaming), ...HTTP_CASES])("$name is HTTP $http with a JSON error body", async (c) => {
    let response: JsonResponse;
    if ("send" in c) {
      response = await c.send(server(), (await server().actor()).token);
    } else {
      const [method, request, token] = await c.setup(await server().actor(), await server().actor(), await server().serviceActor());
      const rpc = VoiceModelService.methods.find((m) => m.localName === method)!.name;
      response = await server().rpcJson(rpc, asJson(request), token);
    }
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
