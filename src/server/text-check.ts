import { invalidArgument } from "../errors";

// NUL (PostgreSQL text cannot hold it) or a UTF-16 surrogate without its pair (not encodable as
// UTF-8): both would fail deep in the database as a 500.
const BAD_TEXT = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** INVALID_ARGUMENT naming the field when any string (or map/Struct key) of a request is bad text. */
export function checkRequestText(value: unknown, path = "request", depth = 0): void {
  if (typeof value === "string") {
    if (BAD_TEXT.test(value)) throw invalidArgument(path, "contains a NUL character or an unpaired UTF-16 surrogate");
    return;
  }
  if (typeof value !== "object" || value === null || value instanceof Uint8Array || value instanceof Date || depth > 64) return;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) checkRequestText(value[i], `${path}[${i}]`, depth + 1);
    return;
  }
  for (const key of Object.keys(value)) {
    if (key === "$typeName") continue;
    const at = path === "request" ? key : `${path}.${key}`;
    if (BAD_TEXT.test(key)) throw invalidArgument(path, "has a key with a NUL character or an unpaired UTF-16 surrogate");
    checkRequestText((value as Record<string, unknown>)[key], at, depth + 1);
  }
}

/** The messages of a client stream, each checked as it arrives. */
export async function* checkedStream<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  for await (const message of messages) {
    checkRequestText(message);
    yield message;
  }
}

const PROTO_KEY = Buffer.from("__proto__");
const JSON_PROTO_KEY = /"(?:_|\\u005[fF]){2}(?:p|\\u0070)roto(?:_|\\u005[fF]){2}"\s*:/;

/**
 * A request body naming a `__proto__` key (in metadata, a Struct): JavaScript objects cannot hold
 * it as data, so the decoder would drop it without a word. Such a body is refused instead.
 * Binary bodies are matched on the bytes (a string value "__proto__" is refused too; no valid
 * field holds one).
 */
export function refuseProtoKey(body: Uint8Array, json: boolean): void {
  const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (json ? !bytes.includes("roto") || !JSON_PROTO_KEY.test(bytes.toString()) : !bytes.includes(PROTO_KEY)) return;
  throw invalidArgument("metadata", 'the key "__proto__" is not allowed');
}
