import type { Db } from "../db/transaction";
import type { Candidate } from "../voice-models/ranking";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import { lifetimeSums } from "./usage-repository";

/** Attaches lifetime average latency to models (from usage_totals, never raw events). */
export async function withLatency(db: Db, models: VoiceModelRecord[]): Promise<Candidate[]> {
  const sums = await lifetimeSums(
    db,
    models.map((m) => m.id),
  );
  return models.map((model) => {
    const s = sums.get(model.id);
    return { model, averageLatency: s && s.usageCount > 0 ? s.latencySum / s.usageCount : undefined };
  });
}
