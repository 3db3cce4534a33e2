import type { Knex } from "knex";
import { modelNotFound } from "../errors";
import type { SharedAccess } from "../voice-models/access";
import type { Actor } from "../voice-models/model-events";
import type { ModelReadCache } from "../voice-models/read-cache";
import * as repo from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";

/**
 * A live model the caller may use (own, shared with them for "use", or any for service and
 * admin callers), read through the model cache: usage stats and comparison need exactly this.
 */
export async function usableModel(
  knex: Knex,
  reads: ModelReadCache,
  access: SharedAccess,
  actor: Actor,
  id: string,
  field = "modelId",
): Promise<VoiceModelRecord> {
  const modelId = valid.modelId(id, field);
  const model = await reads.model(modelId, () => repo.findModel(knex, modelId));
  if (!model) throw modelNotFound(modelId);
  await access.assertCanUse(knex, actor.caller, model);
  if (model.deletedAt) throw modelNotFound(modelId);
  return model;
}
