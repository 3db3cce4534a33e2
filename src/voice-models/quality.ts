import { invalidArgument } from "../errors";
import { QUALITY_WEIGHTS } from "./constants";
import type { QualityComponents } from "./voice-model";

/**
 * Scores are stored as numeric(4,3); the domain works in integer thousandths ("millis") so every
 * threshold compares exactly the stored value: 0.4*0.5+0.3*0.5+0.2*0.5+0.1*0.5 is 500, not 499.99...
 */
export function scoreToMillis(score: number, field: string): number {
  if (!Number.isFinite(score) || score < 0 || score > 1) throw invalidArgument(field, "must be a number from 0 to 1");
  return Math.round(score * 1000);
}

export const millisToScore = (millis: number) => millis / 1000;

export function componentsToMillis(components: QualityComponents, field: string): Record<keyof QualityComponents, number> {
  return {
    similarity: scoreToMillis(components.similarity, `${field}.similarity`),
    naturalness: scoreToMillis(components.naturalness, `${field}.naturalness`),
    clarity: scoreToMillis(components.clarity, `${field}.clarity`),
    consistency: scoreToMillis(components.consistency, `${field}.consistency`),
  };
}

/** The weighted score (0.4/0.3/0.2/0.1) of rounded components, rounded half up to 3 decimals. */
export function weightedMillis(c: Record<keyof QualityComponents, number>): number {
  const tenths =
    QUALITY_WEIGHTS.similarity * c.similarity +
    QUALITY_WEIGHTS.naturalness * c.naturalness +
    QUALITY_WEIGHTS.clarity * c.clarity +
    QUALITY_WEIGHTS.consistency * c.consistency;
  return Math.floor((tenths + 5) / 10);
}
