import { TIME_MS, type PageScope, type PageTokens, type PositionField } from "../paging/page-token";
import type { VoiceModelRecord } from "./voice-model";

/**
 * The orders ListVoiceModels offers. "default" is active first, then quality, created, id; the
 * others sort by their key, then created and id. Every key of one order runs in one direction,
 * so a keyset position is a plain row comparison.
 */
export const LIST_ORDERS = ["default", "created_at asc", "created_at desc", "quality_score asc", "quality_score desc"] as const;
export type ListOrder = (typeof LIST_ORDERS)[number];

/** Position after a row: its sort keys (each order compares the ones it sorts by). */
export interface ListCursor {
  isActive: boolean;
  qualityMillis: number;
  createdAtMs: number;
  id: string;
}

const FIELDS: readonly PositionField[] = [{ kind: "flag" }, { kind: "int", min: 0, max: 1000 }, TIME_MS, { kind: "uuid" }];

export function encodePageToken(tokens: PageTokens, scope: PageScope, last: VoiceModelRecord): string {
  return tokens.mint("ListVoiceModels", scope, FIELDS, [last.isActive, Math.round(last.qualityScore * 1000), last.createdAt.getTime(), last.id]);
}

export function decodePageToken(tokens: PageTokens, scope: PageScope, token: string): ListCursor {
  const [isActive, qualityMillis, createdAtMs, id] = tokens.open("ListVoiceModels", scope, FIELDS, token);
  return { isActive: isActive as boolean, qualityMillis: qualityMillis as number, createdAtMs: createdAtMs as number, id: id as string };
}
