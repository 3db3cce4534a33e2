import type { Provider } from "./constants";
import type { VoiceModelRecord } from "./voice-model";

/**
 * The one ranking of models: SelectBestVoiceModel, CompareVoiceModels' recommendation and the
 * next best model on delete (activation.replaceActive) all use rankModels. It is pure: the usage
 * room attaches latency to candidates when a criterion needs it.
 *
 * A model qualifies when it is completed, live, scores at least minQualityMillis and its known
 * average latency is not above maxLatency. Qualified models rank by:
 *   1. when maxLatency is given: known average latency (within it) before unknown (no usage);
 *   2. higher stored quality_score;
 *   3. the preferred provider, when given;
 *   4. newer created_at (then id, so the order is total).
 * With no criteria this is the foundation's rule: highest score, newest on ties.
 */

export interface RankingCriteria {
  minQualityMillis?: number;
  preferredProvider?: Provider;
  maxLatency?: number;
}

export interface Candidate {
  model: VoiceModelRecord;
  /** Mean latency of its lifetime usage; undefined when it was never used. */
  averageLatency: number | undefined;
}

export type Criterion = "known_latency" | "quality_score" | "preferred_provider" | "newest";

export interface Ranking {
  /** Qualified candidates, best first. */
  ranked: Candidate[];
  /** Candidates that do not qualify, with the reason. */
  excluded: { candidate: Candidate; reason: string }[];
}

const millis = (score: number) => Math.round(score * 1000);

function exclusion(c: Candidate, criteria: RankingCriteria): string | undefined {
  const m = c.model;
  if (m.deletedAt) return "deleted";
  if (m.status !== "completed") return `status is ${m.status}; only completed models qualify`;
  if (criteria.minQualityMillis !== undefined && millis(m.qualityScore) < criteria.minQualityMillis) {
    return `quality_score ${m.qualityScore.toFixed(3)} is below minQualityScore ${(criteria.minQualityMillis / 1000).toFixed(3)}`;
  }
  if (criteria.maxLatency !== undefined && c.averageLatency !== undefined && c.averageLatency > criteria.maxLatency) {
    return `average latency ${round1(c.averageLatency)} ms is above maxLatency ${criteria.maxLatency} ms`;
  }
  return undefined;
}

/** The first criterion on which a and b differ; negative when a ranks first. */
function compareBy(a: Candidate, b: Candidate, criteria: RankingCriteria): { criterion: Criterion; order: number } {
  if (criteria.maxLatency !== undefined) {
    const ka = a.averageLatency !== undefined ? 0 : 1;
    const kb = b.averageLatency !== undefined ? 0 : 1;
    if (ka !== kb) return { criterion: "known_latency", order: ka - kb };
  }
  const q = millis(b.model.qualityScore) - millis(a.model.qualityScore);
  if (q !== 0) return { criterion: "quality_score", order: q };
  if (criteria.preferredProvider !== undefined) {
    const pa = a.model.provider === criteria.preferredProvider ? 0 : 1;
    const pb = b.model.provider === criteria.preferredProvider ? 0 : 1;
    if (pa !== pb) return { criterion: "preferred_provider", order: pa - pb };
  }
  const t = b.model.createdAt.getTime() - a.model.createdAt.getTime();
  return { criterion: "newest", order: t !== 0 ? t : b.model.id < a.model.id ? -1 : b.model.id > a.model.id ? 1 : 0 };
}

export function rankModels(candidates: Candidate[], criteria: RankingCriteria): Ranking {
  const ranked: Candidate[] = [];
  const excluded: Ranking["excluded"] = [];
  for (const c of candidates) {
    const reason = exclusion(c, criteria);
    if (reason) excluded.push({ candidate: c, reason });
    else ranked.push(c);
  }
  ranked.sort((a, b) => compareBy(a, b, criteria).order);
  return { ranked, excluded };
}

/** Why `lower` ranks after `best`, in words, with the deciding criterion. */
export function explainOrder(best: Candidate, lower: Candidate, criteria: RankingCriteria): { criterion: Criterion; reason: string } {
  const { criterion } = compareBy(best, lower, criteria);
  const b = best.model;
  const l = lower.model;
  switch (criterion) {
    case "known_latency":
      return { criterion, reason: `no usage yet (unknown latency) ranks after known latency within ${criteria.maxLatency} ms` };
    case "quality_score":
      return { criterion, reason: `quality_score ${l.qualityScore.toFixed(3)} is lower than ${b.qualityScore.toFixed(3)}` };
    case "preferred_provider":
      return { criterion, reason: `provider ${l.provider} is not the preferred ${criteria.preferredProvider}` };
    case "newest":
      return { criterion, reason: `equal on every criterion and older than ${b.id}` };
  }
}

/** Why the best one won, in words. */
export function explainBest(best: Candidate, runnerUp: Candidate | undefined, criteria: RankingCriteria): { criterion: Criterion | "only_candidate"; reason: string } {
  const m = best.model;
  const latency = best.averageLatency === undefined ? "no usage yet" : `average latency ${round1(best.averageLatency)} ms`;
  const summary = `${m.id} (${m.provider}, quality_score ${m.qualityScore.toFixed(3)}, ${latency})`;
  if (!runnerUp) return { criterion: "only_candidate", reason: `${summary} is the only model that qualifies` };
  const { criterion } = compareBy(best, runnerUp, criteria);
  const why: Record<Criterion, string> = {
    known_latency: `it has known latency within ${criteria.maxLatency} ms and the next one has no usage yet`,
    quality_score: `it has the highest quality_score`,
    preferred_provider: `it ties on quality_score and is from the preferred provider ${criteria.preferredProvider}`,
    newest: `it ties on every criterion and is the newest`,
  };
  return { criterion, reason: `${summary} ranks first: ${why[criterion]}` };
}

const round1 = (n: number) => Math.round(n * 10) / 10;
