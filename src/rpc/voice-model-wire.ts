import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { VoiceModelSchema, type QualityComponents, type VoiceModel } from "../../gen/voicemodel/v1/voice_model_pb";

/**
 * VoiceModel's binary encoding written straight into one buffer, the same bytes as
 * protobuf-es's toBinary (test/voice-model-wire.test.ts compares them): toBinary, and its
 * BinaryWriter with a chunk per string and per nested message, took about 20 µs per model, so a
 * page of 20 cost more CPU than the database round trip it answered. Fields in number order,
 * proto3 zero values left out, as toBinary does; a field added to VoiceModel needs adding here
 * (the test fails until it is).
 */
export function encodeVoiceModel(m: VoiceModel): Uint8Array {
  const w = new Writer();
  w.text(1, m.id);
  w.text(2, m.userId);
  w.text(3, m.provider);
  w.text(4, m.modelPath);
  if (m.sampleRate !== 0) w.tag(5, VARINT).int32(m.sampleRate);
  w.double(6, m.qualityScore);
  if (m.metadata !== undefined) {
    const at = w.fork(7);
    struct(w, m.metadata);
    w.join(at);
  }
  if (m.isActive) w.tag(8, VARINT).byte(1);
  w.text(9, m.status);
  timestamp(w, 10, m.createdAt);
  timestamp(w, 11, m.updatedAt);
  timestamp(w, 12, m.deletedAt);
  if (m.qualityComponents !== undefined) components(w, 13, m.qualityComponents);
  if (m.trainingJobId !== undefined) w.string(14, m.trainingJobId);
  w.text(15, m.etag);
  if (m.modelNumber !== 0) w.tag(16, VARINT).int32(m.modelNumber);
  if (m.parentModelId !== undefined) w.string(17, m.parentModelId);
  if (m.file !== undefined) {
    const at = w.fork(18);
    if (m.file.sizeBytes !== 0n) w.tag(1, VARINT).int64(m.file.sizeBytes);
    w.text(2, m.file.sha256);
    w.join(at);
  }
  return w.finish();
}

/** The message types with an encoder of their own, by type name (the gRPC transport uses them). */
export const wireEncoders: ReadonlyMap<string, (message: never) => Uint8Array> = new Map([[VoiceModelSchema.typeName, encodeVoiceModel]]);

const VARINT = 0;
const BIT64 = 1;
const DELIMITED = 2;
/** Room kept for a nested message's length (a varint up to 2^28). */
const LENGTH_ROOM = 4;

/** A growing buffer; nested messages reserve room for their length and are moved up once known. */
class Writer {
  private buf = scratch;
  private at = 0;

  private room(bytes: number) {
    if (this.at + bytes <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + bytes));
    this.buf.copy(bigger, 0, 0, this.at);
    this.buf = bigger;
    if (bigger.length <= 1 << 20) scratch = bigger;
  }

  byte(b: number): this {
    this.room(1);
    this.buf[this.at++] = b;
    return this;
  }

  varint(n: number): this {
    this.room(10);
    while (n > 0x7f) {
      this.buf[this.at++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.at++] = n;
    return this;
  }

  /** int32: a negative value is sign-extended to 64 bits (ten bytes), as protobuf requires. */
  int32(n: number): this {
    return n >= 0 ? this.varint(n) : this.int64(BigInt(n));
  }

  int64(n: bigint): this {
    if (n >= 0n && n <= BigInt(Number.MAX_SAFE_INTEGER)) return this.varint(Number(n));
    let v = BigInt.asUintN(64, n);
    this.room(10);
    while (v > 0x7fn) {
      this.buf[this.at++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.at++] = Number(v);
    return this;
  }

  tag(field: number, wireType: number): this {
    return this.varint((field << 3) | wireType);
  }

  /** A string field, always written (a oneof member, an optional or a map key). */
  string(field: number, s: string): this {
    this.tag(field, DELIMITED);
    const at = this.fork();
    this.room(s.length * 3);
    this.at += this.buf.write(s, this.at, "utf8");
    this.join(at);
    return this;
  }

  /** A proto3 string field: left out when empty. */
  text(field: number, s: string): void {
    if (s !== "") this.string(field, s);
  }

  /** A proto3 double field: left out when zero. */
  double(field: number, d: number): void {
    if (d !== 0) this.tag(field, BIT64).rawDouble(d);
  }

  rawDouble(d: number): this {
    this.room(8);
    this.at = this.buf.writeDoubleLE(d, this.at);
    return this;
  }

  /** Starts a length-delimited part (after its tag, when field is given); join(returned) ends it. */
  fork(field?: number): number {
    if (field !== undefined) this.tag(field, DELIMITED);
    this.room(LENGTH_ROOM);
    const at = this.at;
    this.at += LENGTH_ROOM;
    return at;
  }

  join(at: number): void {
    const start = at + LENGTH_ROOM;
    const length = this.at - start;
    let n = length;
    let size = 1;
    while (n > 0x7f) (n >>>= 7), size++;
    if (size > LENGTH_ROOM) {
      // Longer than the room kept: make more, then move the part up.
      this.room(size - LENGTH_ROOM);
      this.buf.copy(this.buf, at + size, start, this.at);
    } else if (size < LENGTH_ROOM) {
      this.buf.copy(this.buf, at + size, start, this.at);
    }
    // The length goes into the `size` bytes before the part (there is room: no growing here).
    n = length;
    let i = at;
    while (n > 0x7f) {
      this.buf[i++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    this.buf[i++] = n;
    this.at = i + length;
  }

  finish(): Uint8Array {
    return Buffer.from(this.buf.subarray(0, this.at));
  }
}

/** Shared between calls (encoding is synchronous); finish() copies the bytes out. */
let scratch = Buffer.allocUnsafe(16 * 1024);

function timestamp(w: Writer, field: number, t: Timestamp | undefined) {
  if (t === undefined) return;
  const at = w.fork(field);
  if (t.seconds !== 0n) w.tag(1, VARINT).int64(t.seconds);
  if (t.nanos !== 0) w.tag(2, VARINT).int32(t.nanos);
  w.join(at);
}

function components(w: Writer, field: number, c: QualityComponents) {
  const at = w.fork(field);
  w.double(1, c.similarity);
  w.double(2, c.naturalness);
  w.double(3, c.clarity);
  w.double(4, c.consistency);
  w.join(at);
}

/** google.protobuf.Struct: map<string, Value> fields = 1, one entry per key in key order. */
function struct(w: Writer, object: JsonObject) {
  for (const key of Object.keys(object)) {
    const entry = w.fork(1);
    w.string(1, key);
    const v = w.fork(2);
    value(w, object[key]);
    w.join(v);
    w.join(entry);
  }
}

/** google.protobuf.Value: a oneof, so even a zero value is written. */
function value(w: Writer, v: JsonValue) {
  if (v === null) {
    w.tag(1, VARINT).byte(0);
    return;
  }
  switch (typeof v) {
    case "number":
      w.tag(2, BIT64).rawDouble(v);
      return;
    case "string":
      w.string(3, v);
      return;
    case "boolean":
      w.tag(4, VARINT).byte(v ? 1 : 0);
      return;
  }
  if (Array.isArray(v)) {
    const list = w.fork(6);
    for (const item of v) {
      const at = w.fork(1);
      value(w, item);
      w.join(at);
    }
    w.join(list);
    return;
  }
  const at = w.fork(5);
  struct(w, v as JsonObject);
  w.join(at);
}
