/** The allowed values, declared once; the proto documents them and the migrations check them. */
export const PROVIDERS = ["xtts-v2", "google-cloud-tts", "openai-tts"] as const;
export type Provider = (typeof PROVIDERS)[number];

export const STATUSES = ["pending", "training", "completed", "failed"] as const;
export type Status = (typeof STATUSES)[number];

export const SAMPLE_RATES = [8000, 16000, 22050, 24000, 44100, 48000] as const;
export const DEFAULT_SAMPLE_RATE = 22050;

/** A completed model scoring above this (stored, 3-decimal) value takes over as the active one. */
export const AUTO_ACTIVATE_ABOVE_MILLIS = 800;

export const QUALITY_WEIGHTS = { similarity: 4, naturalness: 3, clarity: 2, consistency: 1 } as const;

export const LIMITS = {
  modelPathMaxChars: 1024,
  metadataMaxBytes: 16 * 1024,
  trainingJobIdMaxChars: 128,
  listDefault: 20,
  listMax: 100,
  /** Ancestors, and descendants, a lineage holds at most (GetVoiceModelLineage, lineage_of). */
  lineageMax: 1000,
} as const;
