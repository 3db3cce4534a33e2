import { TIME_MS, type PageScope, type PageTokens, type PositionField } from "../paging/page-token";
import type { VoiceModelRecord } from "./voice-model";

/** Position after a row in the list order (active, quality, created, id; all descending). */
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
