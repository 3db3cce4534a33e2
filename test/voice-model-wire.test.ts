import { create, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { VoiceModelFileSchema, VoiceModelSchema } from "../gen/voicemodel/v1/voice_model_pb";
import { encodeVoiceModel } from "../src/rpc/voice-model-wire";
import { toProto } from "../src/rpc/voice-model-mapper";

// The hand-written encoder must give toBinary's bytes for every shape a VoiceModel takes.
const metadatas: Array<JsonObject | undefined> = [
  undefined,
  {},
  { language: "en", seed: 3 },
  { "": "", zero: 0, negative: -1.5, big: 1e300, t: true, f: false, nothing: null, "ключ ✓": "значение 🎙" },
  { nested: { deeper: { list: [1, "two", null, false, { x: [] }, []] } }, empty: {} },
  // Lengths of one to four varint bytes, and more than the encoder's scratch buffer holds.
];

const base = {
  id: "7f0c3c8e-6c8f-4a43-9f5a-2f4a3b1d9e01",
  userId: "user-1",
  provider: "xtts-v2",
  modelPath: "gs://bucket/a.pth",
  sampleRate: 24000,
  qualityScore: 0.873,
  isActive: true,
  status: "completed",
  createdAt: timestampFromDate(new Date("2024-05-01T10:11:12.345Z")),
  updatedAt: timestampFromDate(new Date("2024-05-02T00:00:00.000Z")),
  etag: "v3",
};

const variants = [
  {},
  { id: "", userId: "", provider: "", modelPath: "", status: "", etag: "" },
  { sampleRate: 0, qualityScore: 0, isActive: false },
  { qualityScore: 1, sampleRate: 48000 },
  { deletedAt: timestampFromDate(new Date("2025-01-01T00:00:00.001Z")) },
  { createdAt: timestampFromDate(new Date(0)), updatedAt: timestampFromDate(new Date(-1)) },
  { qualityComponents: { similarity: 0.9, naturalness: 0, clarity: 0.5, consistency: 1 } },
  { qualityComponents: { similarity: 0, naturalness: 0, clarity: 0, consistency: 0 } },
  { trainingJobId: "" },
  { trainingJobId: "job-42" },
  { modelNumber: 1 },
  { modelNumber: 127 },
  { modelNumber: 128 },
  { modelNumber: 2_147_483_647 },
  { modelNumber: -1 },
  { parentModelId: "" },
  { parentModelId: "0b1e7d7a-2a4c-4f8e-9d7e-1c2b3a4d5e6f", modelNumber: 3 },
];

describe("VoiceModel wire encoding", () => {
  test.each(metadatas.flatMap((metadata) => variants.map((variant) => ({ metadata, variant }))))("same bytes as toBinary (case %#)", ({ metadata, variant }) => {
    const message = create(VoiceModelSchema, { ...base, ...variant, metadata } as never);
    expect(Buffer.from(encodeVoiceModel(message))).toEqual(Buffer.from(toBinary(VoiceModelSchema, message)));
  });

  test("lengths of one to four varint bytes, and more than the encoder's scratch buffer holds", () => {
    const metadata = { a: "x".repeat(100), b: "y".repeat(200), c: "z".repeat(20_000), list: ["w".repeat(2_100_000)] };
    const message = create(VoiceModelSchema, { ...base, metadata } as never);
    expect(Buffer.compare(Buffer.from(encodeVoiceModel(message)), Buffer.from(toBinary(VoiceModelSchema, message)))).toBe(0);
  });

  test("a message made by toProto encodes the same", () => {
    const message = toProto({
      id: "0b1e7d7a-2a4c-4f8e-9d7e-1c2b3a4d5e6f",
      userId: "user-2",
      provider: "openai-tts",
      modelPath: "gs://bucket/b.pth",
      sampleRate: 22050,
      qualityScore: 0.4,
      qualityComponents: { similarity: 0.1, naturalness: 0.2, clarity: 0.3, consistency: 0.4 },
      metadata: { language: "de" },
      isActive: false,
      status: "failed",
      trainingJobId: undefined,
      version: 7,
      sizeBytes: 10,
      hasFile: false,
      modelNumber: 12,
      parentModelId: "7f0c3c8e-6c8f-4a43-9f5a-2f4a3b1d9e01",
      consentId: undefined,
      createdAt: new Date("2024-01-01T00:00:00.123Z"),
      updatedAt: new Date("2024-01-03T00:00:00.999Z"),
      deletedAt: new Date("2024-01-04T00:00:00Z"),
    });
    expect(message).toMatchObject({ modelNumber: 12, parentModelId: "7f0c3c8e-6c8f-4a43-9f5a-2f4a3b1d9e01" });
    expect(Buffer.from(encodeVoiceModel(message))).toEqual(Buffer.from(toBinary(VoiceModelSchema, message)));
    const withFile = { ...message, file: create(VoiceModelFileSchema, { sizeBytes: 3_000_000_000n, sha256: "ab".repeat(32) }) };
    expect(Buffer.from(encodeVoiceModel(withFile))).toEqual(Buffer.from(toBinary(VoiceModelSchema, withFile)));
  });

  test("every field of VoiceModel is encoded (a new field needs the encoder too)", () => {
    const numbers = VoiceModelSchema.fields.map((f) => f.number).sort((a, b) => a - b);
    expect(numbers).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]);
  });
});
