import { timestampDate } from "@bufbuild/protobuf/wkt";
import { activeId, createModel, modelInput, uniqueUser, useTestServer } from "./helpers/harness";

const server = useTestServer();
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe("CreateVoiceModel", () => {
  test("defaults: status completed, sampleRate 22050, score 0, empty metadata, owned by the caller", async () => {
    const alice = await server().actor();
    const before = Date.now();
    const { message, requestId } = await alice.grpc.createVoiceModel({ provider: "openai-tts", modelPath: "voices/a.bin" });
    const model = message.model!;
    expect(requestId).toBeTruthy();
    expect(model.id).toMatch(UUID);
    expect(model).toMatchObject({
      userId: alice.userId,
      provider: "openai-tts",
      modelPath: "voices/a.bin",
      status: "completed",
      sampleRate: 22050,
      qualityScore: 0,
      metadata: {},
      isActive: true, // the user's first completed model
    });
    expect(model.deletedAt).toBeUndefined();
    expect(model.trainingJobId).toBeUndefined();
    expect(model.qualityComponents).toBeUndefined();
    expect(model.etag).toBeTruthy();
    const created = timestampDate(model.createdAt!).getTime();
    expect(created).toBeGreaterThanOrEqual(before - 1000);
    expect(created).toBeLessThanOrEqual(Date.now() + 1000);
    expect(timestampDate(model.updatedAt!).getTime()).toBeGreaterThanOrEqual(created);

    // What was stored is what Get returns.
    const { message: got } = await alice.grpc.getVoiceModel({ modelId: model.id });
    expect(got.model).toEqual(model);
  });

  test("keeps every given field", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, {
      userId: alice.userId,
      provider: "google-cloud-tts",
      sampleRate: 48000,
      qualityScore: 0.75,
      metadata: { language: "de", tags: ["calm", "warm"], nested: { speed: 1.25, ok: true, none: null } },
      status: "training",
    });
    expect(model).toMatchObject({
      userId: alice.userId,
      provider: "google-cloud-tts",
      sampleRate: 48000,
      qualityScore: 0.75,
      metadata: { language: "de", tags: ["calm", "warm"], nested: { speed: 1.25, ok: true, none: null } },
      status: "training",
      isActive: false,
    });
  });

  test.each([8000, 16000, 22050, 24000, 44100, 48000])("accepts sample rate %i", async (sampleRate) => {
    const alice = await server().actor();
    expect((await createModel(alice, { sampleRate })).sampleRate).toBe(sampleRate);
  });

  test.each(["xtts-v2", "google-cloud-tts", "openai-tts"])("accepts provider %s", async (provider) => {
    const alice = await server().actor();
    expect((await createModel(alice, { provider })).provider).toBe(provider);
  });

  test.each(["pending", "training", "completed", "failed"])("accepts status %s", async (status) => {
    const alice = await server().actor();
    const model = await createModel(alice, { status });
    expect(model.status).toBe(status);
    expect(model.isActive).toBe(status === "completed");
  });

  test("a service creates a model for the user it names", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const model = await createModel(training, { userId, trainingJobId: "job-1" });
    expect(model.userId).toBe(userId);
    expect(model.trainingJobId).toBe("job-1");
    const bob = await server().actor(userId);
    expect(await activeId(bob)).toBe(model.id);
  });
});

describe("quality score", () => {
  test("components of 0.5 each give exactly 0.5 (not 0.49999999999999994)", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, {
      qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5 },
    });
    expect(model.qualityScore).toBe(0.5);
    expect(model.qualityComponents).toMatchObject({ similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5 });
    // The filter compares the stored value: 0.5 is at least 0.5.
    const { message } = await alice.grpc.listVoiceModels({ minQualityScore: 0.5 });
    expect(message.models.map((m) => m.id)).toEqual([model.id]);
  });

  test.each([
    // weights 0.4 / 0.3 / 0.2 / 0.1
    [{ similarity: 1, naturalness: 0, clarity: 0, consistency: 0 }, 0.4],
    [{ similarity: 0, naturalness: 1, clarity: 0, consistency: 0 }, 0.3],
    [{ similarity: 0, naturalness: 0, clarity: 1, consistency: 0 }, 0.2],
    [{ similarity: 0, naturalness: 0, clarity: 0, consistency: 1 }, 0.1],
    [{ similarity: 1, naturalness: 1, clarity: 1, consistency: 1 }, 1],
    [{ similarity: 0.9, naturalness: 0.8, clarity: 0.7, consistency: 0.6 }, 0.8],
    [{ similarity: 0.123, naturalness: 0.456, clarity: 0.789, consistency: 0.111 }, 0.355], // 0.3549
    [{ similarity: 0, naturalness: 0, clarity: 0, consistency: 0.005 }, 0.001], // 0.0005 rounds half up
    [{ similarity: 0.801, naturalness: 0.8, clarity: 0.8, consistency: 0.8 }, 0.8], // 0.8004
  ])("components %j give %d", async (qualityComponents, expected) => {
    const alice = await server().actor();
    const model = await createModel(alice, { qualityComponents });
    expect(model.qualityScore).toBe(expected);
    expect(model.qualityComponents).toMatchObject(qualityComponents);
  });

  test.each([
    [0.1234, 0.123],
    [0.1235, 0.124],
    [0.8004, 0.8],
    [0.99999, 1],
    [0, 0],
    [1, 1],
  ])("a score of %d is stored as %d", async (qualityScore, stored) => {
    const alice = await server().actor();
    expect((await createModel(alice, { qualityScore })).qualityScore).toBe(stored);
  });

  test("components are stored with 3 decimals", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, {
      qualityComponents: { similarity: 0.12345, naturalness: 0.5, clarity: 0.5, consistency: 0.5 },
    });
    expect(model.qualityComponents!.similarity).toBe(0.123);
  });
});

describe("training_job_id idempotency", () => {
  test("a retried create returns the model created the first time", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const first = await createModel(training, { userId, trainingJobId: "job-42", qualityScore: 0.6 });
    // A retry, even with other fields, returns the first model unchanged.
    const retry = await createModel(training, { userId, trainingJobId: "job-42", qualityScore: 0.9, modelPath: "other" });
    expect(retry).toEqual(first);
    const { message } = await training.grpc.listVoiceModels({ userId });
    expect(message.total).toBe(1);
  });

  test("the key is per user", async () => {
    const training = await server().serviceActor();
    const a = await createModel(training, { userId: uniqueUser(), trainingJobId: "job-shared" });
    const b = await createModel(training, { userId: uniqueUser(), trainingJobId: "job-shared" });
    expect(a.id).not.toBe(b.id);
  });

  test("concurrent retries create one model", async () => {
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const results = await Promise.all(
      Array.from({ length: 8 }, () => createModel(training, { userId, trainingJobId: "job-race" })),
    );
    expect(new Set(results.map((m) => m.id)).size).toBe(1);
    const { message } = await training.grpc.listVoiceModels({ userId });
    expect(message.total).toBe(1);
    expect(message.models[0].isActive).toBe(true);
  });

  test("a deleted model's job id still returns that (deleted) model, not a second one", async () => {
    // Idempotency means the training service's retry never creates a duplicate.
    const training = await server().serviceActor();
    const userId = uniqueUser();
    const first = await createModel(training, { userId, trainingJobId: "job-del" });
    await training.grpc.deleteVoiceModel({ modelId: first.id });
    const retry = await createModel(training, { userId, trainingJobId: "job-del" });
    expect(retry.id).toBe(first.id);
    const { message } = await training.grpc.listVoiceModels({ userId, showDeleted: true });
    expect(message.total).toBe(1);
  });

  test("without a job id every create is a new model", async () => {
    const alice = await server().actor();
    const input = modelInput();
    const a = (await alice.grpc.createVoiceModel(input)).message.model!;
    const b = (await alice.grpc.createVoiceModel(input)).message.model!;
    expect(a.id).not.toBe(b.id);
  });
});
