import { isUserId, USER_ID_RULE } from "../auth/user-id";
import { invalidArgument } from "../errors";
import { LIMITS, PROVIDERS, SAMPLE_RATES, STATUSES, type Provider, type Status } from "./constants";
import { LIST_ORDERS, type ListOrder } from "./paging";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Every id the service issues (models, backups) is a UUID; nothing else reaches a query. */
export const isUuid = (value: string) => UUID.test(value);

/** A required UUID id, lowercased; anything else is INVALID_ARGUMENT naming the field. */
export function uuid(value: string, field: string, what = "an id"): string {
  if (!value) throw invalidArgument(field, "is required");
  if (!UUID.test(value)) throw invalidArgument(field, `${JSON.stringify(value.slice(0, 64))} is not ${what} (UUID)`);
  return value.toLowerCase();
}

export const modelId = (value: string, field = "modelId") => uuid(value, field, "a model id");

export const backupId = (value: string, field = "backupId") => uuid(value, field, "a backup id");

/** A user id as tokens carry it. */
export function userId(value: string, field = "userId"): string {
  if (!isUserId(value)) throw invalidArgument(field, `must be ${USER_ID_RULE}`);
  return value;
}

export function provider(value: string, field = "provider"): Provider {
  if (!PROVIDERS.includes(value as Provider)) throw invalidArgument(field, `must be one of ${PROVIDERS.join(", ")}`);
  return value as Provider;
}

export function status(value: string, field = "status"): Status {
  if (!STATUSES.includes(value as Status)) throw invalidArgument(field, `must be one of ${STATUSES.join(", ")}`);
  return value as Status;
}

export function sampleRate(value: number, field = "sampleRate"): number {
  if (!(SAMPLE_RATES as readonly number[]).includes(value)) {
    throw invalidArgument(field, `must be one of ${SAMPLE_RATES.join(", ")}`);
  }
  return value;
}

export function modelPath(value: string, field = "modelPath"): string {
  if (!value || !value.trim()) throw invalidArgument(field, "is required");
  if (value.length > LIMITS.modelPathMaxChars) throw invalidArgument(field, `must be at most ${LIMITS.modelPathMaxChars} characters`);
  return value;
}

export function metadata(value: Record<string, unknown> | undefined, field = "metadata"): Record<string, unknown> {
  const object = value ?? {};
  if (Buffer.byteLength(JSON.stringify(object)) > LIMITS.metadataMaxBytes) {
    throw invalidArgument(field, `must be at most ${LIMITS.metadataMaxBytes} bytes as JSON`);
  }
  return object;
}

export function trainingJobId(value: string, field = "trainingJobId"): string {
  if (!value || value.length > LIMITS.trainingJobIdMaxChars || /[\u0000-\u001f]/.test(value)) {
    throw invalidArgument(field, `must be 1-${LIMITS.trainingJobIdMaxChars} printable characters`);
  }
  return value;
}

export function pageLimit(value: number | undefined, field = "limit"): number {
  if (value === undefined || value === 0) return LIMITS.listDefault;
  if (!Number.isInteger(value) || value < 1 || value > LIMITS.listMax) {
    throw invalidArgument(field, `must be from 1 to ${LIMITS.listMax}`);
  }
  return value;
}

const ORDER_KEYS: Record<string, string> = { created_at: "created_at", createdAt: "created_at", quality_score: "quality_score", qualityScore: "quality_score" };

/** A list's order_by (AIP-132): a key, optionally " asc" or " desc"; empty is the default order. */
export function listOrder(value: string | undefined, field = "orderBy"): ListOrder {
  const words = (value ?? "").trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "default";
  const key = ORDER_KEYS[words[0]];
  const direction = words.length === 1 ? "asc" : words.length === 2 ? words[1].toLowerCase() : undefined;
  const order = `${key} ${direction}` as ListOrder;
  if (!key || !LIST_ORDERS.includes(order)) {
    throw invalidArgument(field, `must be empty or one of created_at, quality_score, optionally followed by " asc" or " desc"`);
  }
  return order;
}

export function offset(value: number | undefined, field = "offset"): number {
  if (value === undefined) return 0;
  if (!Number.isInteger(value) || value < 0) throw invalidArgument(field, "must be 0 or more");
  return value;
}
