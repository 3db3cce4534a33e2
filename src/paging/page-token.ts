import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { invalidArgument } from "../errors";

/**
 * Page tokens of every list: a list's position (the last row's sort keys), authenticated with
 * HMAC-SHA256 under a key derived from the master key for that list alone, and bound to the
 * caller and the filters (both in the MAC, not in the token). Any token this service did not mint
 * for this list, caller and filters is INVALID_ARGUMENT naming the field; none reaches a query.
 *
 * Layout (base64url): version (1 byte) | position fields | first 16 bytes of the MAC.
 */

/** The lists that page with tokens; a token opens only on the list it was minted for. */
export type PagedList = "ListVoiceModels" | "ListAuditEvents" | "ListSharedVoiceModels" | "ListBackups" | "ListActivationHistory" | "ListConsents" | "ListModelsMissingConsent" | "ListModelShares";

/** One field of a position as it travels in a token. Every field is range-checked on opening. */
export type PositionField =
  | { kind: "flag" }
  /** A safe integer from min to max (8 bytes). */
  | { kind: "int"; min: number; max: number }
  /** A bigint row id (8 bytes), as its decimal string, 1 to 2^63-1. */
  | { kind: "serial" }
  /** A UUID (16 bytes), as lowercase text. */
  | { kind: "uuid" };

export type PositionValue = boolean | number | string;

/** Who asked and with which filters: a token only opens for the same caller and filters. */
export interface PageScope {
  callerId: string;
  filters: object;
}

const LABEL = "voicemodel page token v1";
const VERSION = 1;
const TAG_BYTES = 16;
const SIZES = { flag: 1, int: 8, serial: 8, uuid: 16 } as const;
const MAX_SERIAL = 2n ** 63n - 1n;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Times from year 1 to 9999 (ms): what both a JS Date and PostgreSQL's ISO input take. */
export const TIME_RANGE_MS = { min: Date.parse("0001-01-01T00:00:00Z"), max: Date.parse("9999-12-31T23:59:59.999Z") } as const;

/** A timestamp field (ms since the epoch). */
export const TIME_MS: PositionField = { kind: "int", ...TIME_RANGE_MS };

export class PageTokens {
  private readonly keys = new Map<PagedList, readonly Buffer[]>();

  /** masterKeys: current first, then previous ones (tokens minted before a rotation still open). */
  constructor(private readonly masterKeys: () => readonly Buffer[]) {}

  mint(list: PagedList, scope: PageScope, fields: readonly PositionField[], values: readonly PositionValue[]): string {
    if (values.length !== fields.length) throw new Error(`a ${list} position has ${fields.length} fields, got ${values.length}`);
    const body = Buffer.alloc(1 + bodySize(fields));
    body[0] = VERSION;
    let at = 1;
    fields.forEach((field, i) => (at = write(body, at, field, values[i])));
    return Buffer.concat([body, mac(this.keysOf(list)[0], scope, body)]).toString("base64url");
  }

  /** The position in a token, or INVALID_ARGUMENT naming `field` for any token not minted for this scope. */
  open(list: PagedList, scope: PageScope, fields: readonly PositionField[], token: string, field = "pageToken"): PositionValue[] {
    const refused = () => invalidArgument(field, "is not a page token this service issued for this list, caller and filters");
    const bytes = 1 + bodySize(fields) + TAG_BYTES;
    // Exact length and canonical base64url first: nothing longer is decoded, no two spellings open.
    if (token.length !== Math.ceil((bytes * 4) / 3) || !/^[A-Za-z0-9_-]+$/.test(token)) throw refused();
    const raw = Buffer.from(token, "base64url");
    if (raw.length !== bytes || raw.toString("base64url") !== token || raw[0] !== VERSION) throw refused();
    const body = raw.subarray(0, bytes - TAG_BYTES);
    const tag = raw.subarray(bytes - TAG_BYTES);
    // Every key is tried (no early exit on a match), each compare in constant time.
    let verified = false;
    for (const key of this.keysOf(list)) verified = timingSafeEqual(mac(key, scope, body), tag) || verified;
    if (!verified) throw refused();
    const values: PositionValue[] = [];
    let at = 1;
    for (const f of fields) {
      const value = read(body, at, f);
      if (value === undefined) throw refused();
      values.push(value);
      at += SIZES[f.kind];
    }
    return values;
  }

  private keysOf(list: PagedList): readonly Buffer[] {
    let keys = this.keys.get(list);
    if (!keys) {
      const masters = this.masterKeys();
      if (masters.length === 0) throw new Error("page tokens need a master key");
      keys = masters.map((master) => Buffer.from(hkdfSync("sha256", master, Buffer.alloc(0), `${LABEL}\0${list}`, 32)));
      this.keys.set(list, keys);
    }
    return keys;
  }
}

const bodySize = (fields: readonly PositionField[]) => fields.reduce((n, f) => n + SIZES[f.kind], 0);

/** Caller and filters are length-prefixed, so no two scopes give the same MAC input. */
function mac(key: Buffer, scope: PageScope, body: Buffer): Buffer {
  const hmac = createHmac("sha256", key);
  for (const part of [Buffer.from(scope.callerId), Buffer.from(JSON.stringify(scope.filters))]) {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(part.length);
    hmac.update(length).update(part);
  }
  return hmac.update(body).digest().subarray(0, TAG_BYTES);
}

function write(buf: Buffer, at: number, field: PositionField, value: PositionValue): number {
  switch (field.kind) {
    case "flag":
      buf[at] = value ? 1 : 0;
      break;
    case "int":
      if (typeof value !== "number" || !Number.isSafeInteger(value) || value < field.min || value > field.max) throw new Error(`position value ${value} out of range`);
      buf.writeBigInt64BE(BigInt(value), at);
      break;
    case "serial":
      if (typeof value !== "string" || !/^[1-9]\d{0,18}$/.test(value) || BigInt(value) > MAX_SERIAL) throw new Error(`position value ${value} is not a row id`);
      buf.writeBigUInt64BE(BigInt(value), at);
      break;
    case "uuid":
      if (typeof value !== "string" || !UUID.test(value)) throw new Error(`position value ${value} is not a UUID`);
      Buffer.from(value.replace(/-/g, ""), "hex").copy(buf, at);
      break;
  }
  return at + SIZES[field.kind];
}

/** A field's value, or undefined when it is out of range (a token minted by other code). */
function read(buf: Buffer, at: number, field: PositionField): PositionValue | undefined {
  switch (field.kind) {
    case "flag":
      return buf[at] === 0 ? false : buf[at] === 1 ? true : undefined;
    case "int": {
      const value = buf.readBigInt64BE(at);
      return value >= BigInt(field.min) && value <= BigInt(field.max) ? Number(value) : undefined;
    }
    case "serial": {
      const value = buf.readBigUInt64BE(at);
      return value >= 1n && value <= MAX_SERIAL ? value.toString() : undefined;
    }
    case "uuid": {
      const hex = buf.toString("hex", at, at + 16);
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    }
  }
}
