import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createHash } from "node:crypto";
import type { RecordUsageRequest } from "../../gen/voicemodel/v1/usage_pb";
import { invalidArgument } from "../errors";
import { isUserId, USER_ID_RULE } from "../auth/user-id";
import * as valid from "../voice-models/validation";

/** A validated usage event, ready to store. */
export interface UsageEvent {
  modelId: string;
  userId: string;
  idempotencyKey: string;
  /** sha256 of the payload as sent; a retried key must carry the same one. */
  payloadHash: string;
  characters: number | null;
  audioSeconds: number | null;
  latencyMs: number;
  /** Cost in millionths, so sums stay exact. */
  costMicros: number;
  qualityRating: number | null;
  usedAt: Date;
  /** UTC day of usedAt, YYYY-MM-DD: the roll-up it lands in. */
  day: string;
}

export const USAGE_LIMITS = {
  batchMax: 1000,
  idempotencyKeyMaxChars: 128,
  maxLatencyMs: 3_600_000,
  maxCost: 1_000_000,
  maxCharacters: 1_000_000_000,
  maxAudioSeconds: 1_000_000,
  /** How far in the future usedAt may lie (clock skew between services). */
  maxFutureMs: 5 * 60_000,
} as const;

/** Validates one request; `prefix` names the event in a batch ("events[3]."). */
export function toUsageEvent(req: RecordUsageRequest, now: Date, prefix = ""): UsageEvent {
  const field = (name: string) => `${prefix}${name}`;
  const modelId = valid.modelId(req.modelId, field("modelId"));
  if (!isUserId(req.userId)) {
    throw invalidArgument(field("userId"), `must be ${USER_ID_RULE}`);
  }
  const key = req.idempotencyKey;
  if (!key || key.length > USAGE_LIMITS.idempotencyKeyMaxChars || /[\u0000-\u001f]/.test(key)) {
    throw invalidArgument(field("idempotencyKey"), `must be 1-${USAGE_LIMITS.idempotencyKeyMaxChars} printable characters`);
  }
  if (req.characters === undefined && req.audioSeconds === undefined) {
    throw invalidArgument(field("characters"), "give characters, audioSeconds or both");
  }
  let characters: number | null = null;
  if (req.characters !== undefined) {
    if (req.characters < 0n || req.characters > BigInt(USAGE_LIMITS.maxCharacters)) {
      throw invalidArgument(field("characters"), `must be from 0 to ${USAGE_LIMITS.maxCharacters}`);
    }
    characters = Number(req.characters);
  }
  let audioSeconds: number | null = null;
  if (req.audioSeconds !== undefined) {
    audioSeconds = bounded(req.audioSeconds, 0, USAGE_LIMITS.maxAudioSeconds, field("audioSeconds"));
    audioSeconds = Math.round(audioSeconds * 1000) / 1000;
  }
  if (!Number.isInteger(req.latencyMs) || req.latencyMs < 0 || req.latencyMs > USAGE_LIMITS.maxLatencyMs) {
    throw invalidArgument(field("latencyMs"), `must be an integer from 0 to ${USAGE_LIMITS.maxLatencyMs}`);
  }
  const costMicros = Math.round(bounded(req.cost, 0, USAGE_LIMITS.maxCost, field("cost")) * 1_000_000);
  let qualityRating: number | null = null;
  if (req.qualityRating !== undefined) {
    if (!Number.isInteger(req.qualityRating) || req.qualityRating < 1 || req.qualityRating > 5) {
      throw invalidArgument(field("qualityRating"), "must be an integer from 1 to 5");
    }
    qualityRating = req.qualityRating;
  }
  let usedAt = now;
  if (req.usedAt) {
    usedAt = timestampDate(req.usedAt);
    const ms = usedAt.getTime();
    if (!Number.isFinite(ms) || ms < Date.UTC(2000, 0, 1) || ms > now.getTime() + USAGE_LIMITS.maxFutureMs) {
      throw invalidArgument(field("usedAt"), "must be after 2000-01-01 and at most 5 minutes in the future");
    }
    usedAt = new Date(ms);
  }
  // The payload as sent (usedAt absent stays absent), so a retry of the same call matches.
  const payload = [req.userId, characters, audioSeconds, req.latencyMs, costMicros, qualityRating, req.usedAt ? usedAt.getTime() : null];
  const payloadHash = createHash("sha256").update(JSON.stringify(payload)).digest("hex");
  return {
    modelId,
    userId: req.userId,
    idempotencyKey: key,
    payloadHash,
    characters,
    audioSeconds,
    latencyMs: req.latencyMs,
    costMicros,
    qualityRating,
    usedAt,
    day: usedAt.toISOString().slice(0, 10),
  };
}

function bounded(value: number, min: number, max: number, field: string): number {
  if (!Number.isFinite(value) || value < min || value > max) throw invalidArgument(field, `must be from ${min} to ${max}`);
  return value;
}
