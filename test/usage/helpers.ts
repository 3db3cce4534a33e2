import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { randomBytes } from "node:crypto";
import type { RecordUsageRequestSchema } from "../../gen/voicemodel/v1/usage_pb";

export type UsageInput = MessageInitShape<typeof RecordUsageRequestSchema>;

/** A valid usage event for a model and user with a fresh idempotency key; override any field. */
export function usageInput(modelId: string, userId: string, overrides: Partial<UsageInput> = {}): UsageInput {
  return {
    modelId,
    userId,
    characters: 120n,
    latencyMs: 200,
    cost: 0.0012,
    idempotencyKey: `k-${randomBytes(8).toString("hex")}`,
    ...overrides,
  };
}

export const at = (iso: string) => timestampFromDate(new Date(iso));
