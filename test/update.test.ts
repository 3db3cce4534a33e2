import { create } from "@bufbuild/protobuf";
import { FieldMaskSchema, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import { expectGrpcError } from "./helpers/expect-error";
import { createModel, sleep, uniqueUser, useTestServer } from "./helpers/harness";

const server = useTestServer();
const mask = (...paths: string[]) => create(FieldMaskSchema, { paths });

describe("UpdateVoiceModel", () => {
  test("without a mask, the fields present in the request change and nothing else", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { qualityScore: 0.4, sampleRate: 16000, metadata: { a: 1 } });
    await sleep(5);
    const { message } = await alice.grpc.updateVoiceModel({ modelId: model.id, sampleRate: 44100, modelPath: "new/path.pth" });
    const updated = message.model!;
    expect(updated).toMatchObject({
      id: model.id,
      sampleRate: 44100,
      modelPath: "new/path.pth",
      qualityScore: 0.4,
      metadata: { a: 1 },
      status: "completed",
      provider: model.provider,
      isActive: true,
    });
    expect(updated.etag).not.toBe(model.etag);
    expect(timestampDate(updated.updatedAt!).getTime()).toBeGreaterThan(timestampDate(model.updatedAt!).getTime());
    expect(updated.createdAt).toEqual(model.createdAt);
    expect((await alice.grpc.getVoiceModel({ modelId: model.id })).message.model).toEqual(updated);
  });

  test("with a mask, only the masked fields change even if others are sent", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { qualityScore: 0.4, sampleRate: 16000 });
    const { message } = await alice.grpc.updateVoiceModel({
      modelId: model.id,
      qualityScore: 0.65,
      sampleRate: 48000,
      modelPath: "ignored",
      updateMask: mask("quality_score"),
    });
    expect(message.model).toMatchObject({ qualityScore: 0.65, sampleRate: 16000, modelPath: model.modelPath });
  });

  test("mask paths may be snake_case or camelCase", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const { message } = await alice.grpc.updateVoiceModel({
      modelId: model.id,
      sampleRate: 8000,
      modelPath: "p2",
      updateMask: mask("sampleRate", "model_path"),
    });
    expect(message.model).toMatchObject({ sampleRate: 8000, modelPath: "p2" });
  });

  test("metadata is replaced whole, not merged", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { metadata: { language: "en", tags: ["a"], keep: true } });
    const { message } = await alice.grpc.updateVoiceModel({ modelId: model.id, metadata: { language: "fr" } });
    expect(message.model!.metadata).toEqual({ language: "fr" });
  });

  test("a masked metadata absent from the request clears it", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { metadata: { language: "en" } });
    const { message } = await alice.grpc.updateVoiceModel({ modelId: model.id, updateMask: mask("metadata") });
    expect(message.model!.metadata).toEqual({});
  });

  test("a new quality score drops the old components", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { qualityComponents: { similarity: 0.5, naturalness: 0.5, clarity: 0.5, consistency: 0.5 } });
    const { message } = await alice.grpc.updateVoiceModel({ modelId: model.id, qualityScore: 0.3336 });
    expect(message.model!.qualityScore).toBe(0.334);
    expect(message.model!.qualityComponents).toBeUndefined();
  });

  test("a matching etag applies the update; the etag then changes", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const { message } = await alice.grpc.updateVoiceModel({ modelId: model.id, qualityScore: 0.2, etag: model.etag });
    expect(message.model!.qualityScore).toBe(0.2);
    expect(message.model!.etag).not.toBe(model.etag);
  });

  test("a stale etag is ABORTED / ETAG_MISMATCH and changes nothing", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const first = (await alice.grpc.updateVoiceModel({ modelId: model.id, qualityScore: 0.2, etag: model.etag })).message.model!;
    // A second editor still holding the original etag.
    await expectGrpcError(alice.grpc.updateVoiceModel({ modelId: model.id, qualityScore: 0.9, etag: model.etag }), {
      code: Code.Aborted,
      reason: "ETAG_MISMATCH",
      modelId: model.id,
      field: "etag",
      message: model.id,
    });
    expect((await alice.grpc.getVoiceModel({ modelId: model.id })).message.model).toEqual(first);
  });

  test("an activation change also invalidates the etag", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    await createModel(alice, { qualityScore: 0.9 }); // takes over: `model` changes
    await expectGrpcError(alice.grpc.updateVoiceModel({ modelId: model.id, qualityScore: 0.3, etag: model.etag }), {
      code: Code.Aborted,
      reason: "ETAG_MISMATCH",
      modelId: model.id,
    });
  });

  test("a user may not change status: PERMISSION_DENIED / ACCESS_DENIED, nothing changes", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    await expectGrpcError(alice.grpc.updateVoiceModel({ modelId: model.id, status: "failed", qualityScore: 0.5 }), {
      code: Code.PermissionDenied,
      reason: "ACCESS_DENIED",
      field: "status",
    });
    expect((await alice.grpc.getVoiceModel({ modelId: model.id })).message.model).toEqual(model);
  });

  test.each(["service", "admin"] as const)("the %s role may change status", async (role) => {
    const caller = role === "service" ? await server().serviceActor() : await server().adminActor();
    const model = await createModel(caller, { userId: uniqueUser(), status: "training" });
    const { message } = await caller.grpc.updateVoiceModel({ modelId: model.id, status: "completed" });
    expect(message.model).toMatchObject({ status: "completed", isActive: true });
  });

  test("the service and admin roles may update any user's model", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    const admin = await server().adminActor();
    const { message } = await admin.grpc.updateVoiceModel({ modelId: model.id, modelPath: "moved" });
    expect(message.model!.modelPath).toBe("moved");
    expect(message.model!.userId).toBe(alice.userId);
  });
});
