import type { VoiceModelRecord } from "./voice-model";

/**
 * A read-through cache in front of the service's hot reads (src/cache implements it). `load`
 * reads the database; the cache decides whether to serve a stored value instead. Access checks
 * run on whatever it returns, so a cached value is never served to a caller who may not see it.
 */
export interface ModelReadCache {
  model(modelId: string, load: () => Promise<VoiceModelRecord | undefined>): Promise<VoiceModelRecord | undefined>;
  active(userId: string, load: () => Promise<VoiceModelRecord | undefined>): Promise<VoiceModelRecord | undefined>;
  /** One page of a user's list; `key` identifies the filters and paging. */
  list(
    userId: string,
    key: string,
    load: () => Promise<{ models: VoiceModelRecord[]; total: number }>,
  ): Promise<{ models: VoiceModelRecord[]; total: number }>;
}
