import { Code } from "@connectrpc/connect";
import { expectRpcError, httpError } from "./helpers/expect-error";
import { createModel, modelInput, TRANSPORTS, useTestServer, type Actor } from "./helpers/harness";

// Strings PostgreSQL cannot store (NUL) or UTF-8 cannot encode (an unpaired surrogate), in any
// field, metadata key or value; ids that are not UUIDs on the HTTP routes; a `__proto__` key the
// decoder would drop: each is INVALID_ARGUMENT naming the field, and nothing is written.
const server = useTestServer();
let alice: Actor;
let modelId: string;

const userRows = async (userId: string) => server().db.knex("voice_models").where({ user_id: userId }).select("*").orderBy("id");

beforeAll(async () => {
  alice = await server().actor();
  modelId = (await createModel(alice)).id;
});

const NUL_CASES: Array<[name: string, field: string, request: object]> = [
  ["NUL in modelPath", "modelPath", modelInput({ modelPath: "models/a\u0000b.pth" })],
  ["NUL in trainingJobId", "trainingJobId", modelInput({ trainingJobId: "job\u0000" })],
  ["NUL in a metadata value", "metadata.note", modelInput({ metadata: { note: "a\u0000b" } })],
  ["NUL in a nested metadata value", "metadata.tags[1]", modelInput({ metadata: { tags: ["ok", "\u0000"] } })],
  ["NUL in a metadata key", "metadata", modelInput({ metadata: { "a\u0000": 1 } })],
];

describe.each(TRANSPORTS)("over %s", (transport) => {
  test.each(NUL_CASES)("%s: INVALID_ARGUMENT naming the field", async (_name, field, request) => {
    const before = await userRows(alice.userId);
    expectRpcError(await server().call(transport, "createVoiceModel", request, alice.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field });
    expect(await userRows(alice.userId)).toEqual(before);
  });

  test("NUL in an update's metadata: INVALID_ARGUMENT naming the field", async () => {
    const before = await userRows(alice.userId);
    const outcome = await server().call(transport, "updateVoiceModel", { modelId, metadata: { x: "\u0000" } }, alice.token);
    expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "metadata.x" });
    expect(await userRows(alice.userId)).toEqual(before);
  });
});

test("an unpaired surrogate (Connect JSON) is INVALID_ARGUMENT naming the field", async () => {
  const before = await userRows(alice.userId);
  for (const [field, body] of [
    ["modelPath", '{"provider":"xtts-v2","modelPath":"models/\\ud800.pth"}'],
    ["provider", '{"provider":"\\udc00","modelPath":"models/x.pth"}'],
    ["metadata.k", '{"provider":"xtts-v2","modelPath":"models/x.pth","metadata":{"k":"\\ud83d"}}'],
  ]) {
    const reply = await server().rpcJson("CreateVoiceModel", body, alice.token);
    expect({ field, status: reply.status }).toEqual({ field, status: 400 });
    expect(httpError(reply.body)?.errorInfo?.metadata.field).toBe(field);
  }
  expect(await userRows(alice.userId)).toEqual(before);
});

test("a __proto__ metadata key is refused, not dropped", async () => {
  const before = await userRows(alice.userId);
  for (const body of [
    '{"provider":"xtts-v2","modelPath":"models/p.pth","metadata":{"__proto__":{"admin":true},"k":1}}',
    '{"provider":"xtts-v2","modelPath":"models/p.pth","metadata":{"\\u005f_proto__":1}}',
  ]) {
    const reply = await server().rpcJson("CreateVoiceModel", body, alice.token);
    expect(reply.status).toBe(400);
    const error = httpError(reply.body);
    expect(error?.errorInfo?.metadata.field).toBe("metadata");
    expect(error?.message).toMatch(/__proto__/);
  }
  const update = await server().rpcJson("UpdateVoiceModel", `{"modelId":"${modelId}","metadata":{"__proto__":1}}`, alice.token);
  expect(update.status).toBe(400);
  expect(await userRows(alice.userId)).toEqual(before);
});

test("ids that are not UUIDs on the HTTP routes are INVALID_ARGUMENT naming the id", async () => {
  for (const [path, field] of [
    ["/v1/voice-models/not-a-uuid/file", "modelId"],
    ["/v1/voice-models/%00/export", "modelId"],
    [`/v1/voice-models/${modelId}x/file`, "modelId"],
    ["/v1/backups/..%2Fsecrets", "backupId"],
  ]) {
    const reply = await server().fetch(path, { token: alice.token });
    expect({ path, status: reply.status }).toEqual({ path, status: 400 });
    expect(httpError(reply.body)?.errorInfo).toMatchObject({ reason: "INVALID_ARGUMENT", metadata: { field } });
    expect(reply.headers.get("x-request-id")).toBe(httpError(reply.body)?.errorInfo?.metadata.requestId);
  }
});
