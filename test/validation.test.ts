import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { VoiceModel } from "../gen/voicemodel/v1/voice_model_pb";
import { expectRpcError } from "./helpers/expect-error";
import { createModel, TRANSPORTS, uniqueUser, useTestServer, type Actor, type MethodName } from "./helpers/harness";

const server = useTestServer();

const big = (bytes: number) => ({ blob: "x".repeat(bytes) });
const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });
const VALID = { provider: "xtts-v2", modelPath: "models/ok.pth" };

/** Everything the user has (deleted included), to prove a refused call changed nothing. */
async function snapshot(actor: Actor): Promise<VoiceModel[]> {
  return (await actor.grpc.listVoiceModels({ showDeleted: true, limit: 100 })).message.models;
}

interface BadInput {
  name: string;
  field: string;
  method: MethodName;
  /** The request, given the user's existing model and a privileged caller's need for userId. */
  request(model: VoiceModel, actor: Actor): object;
  /** Send as the service role (needed to reach the status/userId checks). */
  asService?: boolean;
}

const CREATE: BadInput[] = [
  { name: "unknown provider", field: "provider", method: "createVoiceModel", request: () => ({ ...VALID, provider: "espeak" }) },
  { name: "empty provider", field: "provider", method: "createVoiceModel", request: () => ({ ...VALID, provider: "" }) },
  { name: "provider in other case", field: "provider", method: "createVoiceModel", request: () => ({ ...VALID, provider: "XTTS-V2" }) },
  { name: "missing modelPath", field: "modelPath", method: "createVoiceModel", request: () => ({ provider: "xtts-v2" }) },
  { name: "blank modelPath", field: "modelPath", method: "createVoiceModel", request: () => ({ ...VALID, modelPath: "   " }) },
  { name: "modelPath over 1024 characters", field: "modelPath", method: "createVoiceModel", request: () => ({ ...VALID, modelPath: "m".repeat(1025) }) },
  { name: "unsupported sampleRate", field: "sampleRate", method: "createVoiceModel", request: () => ({ ...VALID, sampleRate: 11025 }) },
  { name: "sampleRate 0", field: "sampleRate", method: "createVoiceModel", request: () => ({ ...VALID, sampleRate: 0 }) },
  { name: "negative sampleRate", field: "sampleRate", method: "createVoiceModel", request: () => ({ ...VALID, sampleRate: -22050 }) },
  { name: "qualityScore below 0", field: "qualityScore", method: "createVoiceModel", request: () => ({ ...VALID, qualityScore: -0.001 }) },
  { name: "qualityScore above 1", field: "qualityScore", method: "createVoiceModel", request: () => ({ ...VALID, qualityScore: 1.01 }) },
  { name: "qualityScore NaN", field: "qualityScore", method: "createVoiceModel", request: () => ({ ...VALID, qualityScore: Number.NaN }) },
  { name: "qualityScore Infinity", field: "qualityScore", method: "createVoiceModel", request: () => ({ ...VALID, qualityScore: Number.POSITIVE_INFINITY }) },
  ...(["similarity", "naturalness", "clarity", "consistency"] as const).flatMap((c): BadInput[] => [
    {
      name: `${c} above 1`,
      field: `qualityComponents.${c}`,
      method: "createVoiceModel",
      request: () => ({ ...VALID, qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5, [c]: 1.5 } }),
    },
    {
      name: `${c} below 0`,
      field: `qualityComponents.${c}`,
      method: "createVoiceModel",
      request: () => ({ ...VALID, qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5, [c]: -1 } }),
    },
  ]),
  {
    name: "both qualityScore and qualityComponents",
    field: "qualityComponents",
    method: "createVoiceModel",
    request: () => ({ ...VALID, qualityScore: 0.5, qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5 } }),
  },
  { name: "metadata over 16 KiB", field: "metadata", method: "createVoiceModel", request: () => ({ ...VALID, metadata: big(16 * 1024) }) },
  { name: "unknown status", field: "status", method: "createVoiceModel", request: () => ({ ...VALID, status: "done" }) },
  { name: "empty trainingJobId", field: "trainingJobId", method: "createVoiceModel", request: () => ({ ...VALID, trainingJobId: "" }) },
  { name: "trainingJobId over 128 characters", field: "trainingJobId", method: "createVoiceModel", request: () => ({ ...VALID, trainingJobId: "j".repeat(129) }) },
  { name: "trainingJobId with control characters", field: "trainingJobId", method: "createVoiceModel", request: () => ({ ...VALID, trainingJobId: "job\n1" }) },
  { name: "userId with forbidden characters", field: "userId", method: "createVoiceModel", request: () => ({ ...VALID, userId: "bob smith" }), asService: true },
  { name: "userId over 128 characters", field: "userId", method: "createVoiceModel", request: () => ({ ...VALID, userId: "u".repeat(129) }), asService: true },
  { name: "userId with SQL", field: "userId", method: "createVoiceModel", request: () => ({ ...VALID, userId: "x'; drop table voice_models;--" }), asService: true },
];

const BY_ID: BadInput[] = (["getVoiceModel", "updateVoiceModel", "deleteVoiceModel", "activateVoiceModel", "deactivateVoiceModel"] as const).flatMap(
  (method): BadInput[] => [
    { name: `${method}: malformed modelId`, field: "modelId", method, request: () => ({ modelId: "model-1", qualityScore: 0.5 }) },
    { name: `${method}: empty modelId`, field: "modelId", method, request: () => ({ modelId: "", qualityScore: 0.5 }) },
    { name: `${method}: modelId with SQL`, field: "modelId", method, request: () => ({ modelId: "' or 1=1 --", qualityScore: 0.5 }) },
  ],
);

const UPDATE: BadInput[] = [
  { name: "qualityScore above 1", field: "qualityScore", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, qualityScore: 2 }) },
  { name: "qualityScore below 0", field: "qualityScore", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, qualityScore: -0.5 }) },
  { name: "unsupported sampleRate", field: "sampleRate", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, sampleRate: 12345 }) },
  { name: "unknown status", field: "status", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, status: "archived" }), asService: true },
  { name: "metadata over 16 KiB", field: "metadata", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, metadata: big(17 * 1024) }) },
  { name: "blank modelPath", field: "modelPath", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, modelPath: "" }) },
  { name: "modelPath over 1024 characters", field: "modelPath", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, modelPath: "p".repeat(1025) }) },
  { name: "a mask naming an unknown field", field: "updateMask", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, qualityScore: 0.5, updateMask: mask("provider") }) },
  { name: "a mask naming a field absent from the request", field: "qualityScore", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, sampleRate: 16000, updateMask: mask("quality_score", "sample_rate") }) },
  { name: "no field to change", field: "updateMask", method: "updateVoiceModel", request: (m) => ({ modelId: m.id }) },
  { name: "one bad field among good ones", field: "sampleRate", method: "updateVoiceModel", request: (m) => ({ modelId: m.id, qualityScore: 0.9, modelPath: "new", sampleRate: 1 }) },
];

const LIST: BadInput[] = [
  { name: "limit above 100", field: "limit", method: "listVoiceModels", request: () => ({ limit: 101 }) },
  { name: "negative limit", field: "limit", method: "listVoiceModels", request: () => ({ limit: -5 }) },
  { name: "negative offset", field: "offset", method: "listVoiceModels", request: () => ({ offset: -1 }) },
  { name: "minQualityScore above 1", field: "minQualityScore", method: "listVoiceModels", request: () => ({ minQualityScore: 1.5 }) },
  { name: "minQualityScore below 0", field: "minQualityScore", method: "listVoiceModels", request: () => ({ minQualityScore: -0.1 }) },
  { name: "unknown provider filter", field: "provider", method: "listVoiceModels", request: () => ({ provider: "nope" }) },
  { name: "unknown status filter", field: "status", method: "listVoiceModels", request: () => ({ status: "nope" }) },
  { name: "garbage pageToken", field: "pageToken", method: "listVoiceModels", request: () => ({ pageToken: "%%%" }) },
  { name: "userId with forbidden characters", field: "userId", method: "listVoiceModels", request: () => ({ userId: "a/b" }), asService: true },
  { name: "GetActive: userId with forbidden characters", field: "userId", method: "getActiveVoiceModel", request: () => ({ userId: "a b" }), asService: true },
];

const ALL = [...CREATE, ...BY_ID, ...UPDATE, ...LIST];

describe.each(TRANSPORTS)("bad input over %s is INVALID_ARGUMENT and changes nothing", (transport) => {
  let alice: Actor;
  let service: Actor;
  let model: VoiceModel;
  beforeAll(async () => {
    alice = await server().actor(uniqueUser("alice"));
    service = await server().serviceActor();
    model = await createModel(alice, { metadata: { keep: "me" }, qualityScore: 0.4 });
    await createModel(alice, { qualityScore: 0.3, status: "pending" });
  });

  test.each(ALL)("$name", async (bad) => {
    const before = await snapshot(alice);
    const caller = bad.asService ? service : alice;
    let request = bad.request(model, alice) as Record<string, unknown>;
    // A service caller must name the user; keep it unless the case is about userId.
    if (bad.asService && !("userId" in request) && bad.method !== "updateVoiceModel") request = { ...request, userId: alice.userId };
    const outcome = await server().call(transport, bad.method, request, caller.token);
    expectRpcError(outcome, { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: bad.field });
    // The message names the field.
    expect(outcome.errorMessage).toContain(bad.field);
    expect(await snapshot(alice)).toEqual(before);
  });
});

test("metadata of exactly 16 KiB (as JSON) is accepted", async () => {
  const alice = await server().actor();
  const overhead = JSON.stringify({ blob: "" }).length;
  const model = await createModel(alice, { metadata: big(16 * 1024 - overhead) });
  expect(Buffer.byteLength(JSON.stringify(model.metadata))).toBe(16 * 1024);
});

test("userId of 128 allowed characters is accepted", async () => {
  const service = await server().serviceActor();
  const userId = "A-z0.9_:@|-".repeat(12).slice(0, 128);
  const model = await createModel(service, { userId });
  expect(model.userId).toBe(userId);
});

test("modelPath of 1024 characters and trainingJobId of 128 are accepted", async () => {
  const alice = await server().actor();
  const model = await createModel(alice, { modelPath: "p".repeat(1024), trainingJobId: "t".repeat(128) });
  expect(model.modelPath).toHaveLength(1024);
  expect(model.trainingJobId).toHaveLength(128);
});
