import { createHash } from "node:crypto";
import { invalidArgument } from "../errors";
import type { VoiceModelRecord } from "./voice-model";

/** Position after a row in the list order (active, quality, created, id; all descending). */
export interface ListCursor {
  isActive: boolean;
  qualityMillis: number;
  createdAtMs: number;
  id: string;
}

/** A hash of the filters a token was made for: a token is only valid with the same filters. */
export function filtersHash(filters: object): string {
  return createHash("sha256").update(JSON.stringify(filters)).digest("base64url").slice(0, 16);
}

export function encodePageToken(last: VoiceModelRecord, filters: string): string {
  const payload = [filters, last.isActive ? 1 : 0, Math.round(last.qualityScore * 1000), last.createdAt.getTime(), last.id];
  return Buffer.from(JSON.stringify(payload)).toString("base64url");
}

export function decodePageToken(token: string, filters: string, field = "pageToken"): ListCursor {
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalidArgument(field, "is not a token this service issued");
  }
  if (
    !Array.isArray(payload) ||
    payload.length !== 5 ||
    typeof payload[0] !== "string" ||
    (payload[1] !== 0 && payload[1] !== 1) ||
    !Number.isInteger(payload[2]) ||
    !Number.isInteger(payload[3]) ||
    typeof payload[4] !== "string" ||
    !/^[0-9a-f-]{36}$/.test(payload[4])
  ) {
    throw invalidArgument(field, "is not a token this service issued");
  }
  if (payload[0] !== filters) throw invalidArgument(field, "was issued for other filters");
  return { isActive: payload[1] === 1, qualityMillis: payload[2], createdAtMs: payload[3], id: payload[4] };
}
