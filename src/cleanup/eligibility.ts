import type { GovernanceConfig } from "../config";

export type CleanupRules = GovernanceConfig["cleanup"];

/**
 * The cleanup criteria as one SQL condition on `v` (voice_models) at time `now`: created more
 * than minAgeDays ago AND not active AND stored quality below the threshold AND no usage in the
 * last unusedDays AND (unless configured otherwise) no shares. Soft-deleted models are never
 * eligible again.
 */
export function eligibleCondition(rules: CleanupRules, now: Date): { sql: string; bindings: Array<string | number> } {
  const at = now.toISOString();
  const sql = `v.deleted_at IS NULL
    AND NOT v.is_active
    AND v.created_at < ?::timestamptz - make_interval(days => ?)
    AND v.quality_score < ?::numeric
    AND NOT EXISTS (SELECT 1 FROM usage_totals u WHERE u.model_id = v.id AND u.last_used_at >= ?::timestamptz - make_interval(days => ?))
    ${rules.includeShared ? "" : "AND NOT EXISTS (SELECT 1 FROM model_shares s WHERE s.model_id = v.id)"}`;
  return { sql, bindings: [at, rules.minAgeDays, (rules.maxQualityMillis / 1000).toFixed(3), at, rules.unusedDays] };
}

/**
 * The criteria that do not change with time, on one user's models (ListExpiringModels): live,
 * not active, quality below the threshold and (unless configured otherwise) not shared.
 */
export function candidateCondition(rules: CleanupRules, userId: string): { sql: string; bindings: Array<string | number> } {
  const sql = `v.user_id = ? AND v.deleted_at IS NULL AND NOT v.is_active AND v.quality_score < ?::numeric
    ${rules.includeShared ? "" : "AND NOT EXISTS (SELECT 1 FROM model_shares s WHERE s.model_id = v.id)"}`;
  return { sql, bindings: [userId, (rules.maxQualityMillis / 1000).toFixed(3)] };
}

/** Why a model is (or will be) eligible, in words, for ListExpiringModels. */
export function reasonsFor(rules: CleanupRules, model: { qualityScore: number }, lastUsedAt: Date | undefined): string[] {
  return [
    `older than ${rules.minAgeDays} days`,
    "not active",
    `quality ${model.qualityScore.toFixed(3)} below ${(rules.maxQualityMillis / 1000).toFixed(3)}`,
    lastUsedAt ? `last used ${lastUsedAt.toISOString()}, no usage in the last ${rules.unusedDays} days` : "never used",
  ];
}
