import type { Tx } from "../db/transaction";
import { AUTO_ACTIVATE_ABOVE_MILLIS } from "./constants";
import type { ActivationReason, ChangeLog } from "./model-events";
import { rankModels } from "./ranking";
import * as repo from "./repository";
import type { VoiceModelRecord } from "./voice-model";

/**
 * The activation rules. Each function runs inside a transaction that already holds the user's
 * owner lock (repository.lockOwner); the partial unique index backs them up. Every model they
 * change is recorded in the transaction's ChangeLog, and every change of the active model as an
 * activation change with its reason (one activation history row; the service's write refuses a
 * transaction that flips a model's active state without one).
 */

/** Makes `model` the user's only active model. */
export async function makeActive(
  trx: Tx,
  log: ChangeLog,
  model: VoiceModelRecord,
  reason: ActivationReason,
  options: { undoneEntryId?: string } = {},
): Promise<VoiceModelRecord> {
  const current = await repo.findActiveModel(trx, model.userId);
  if (current?.id === model.id) return current;
  if (current) await repo.patchModel(trx, log, current.id, { isActive: false }, "deactivated");
  const activated = await repo.patchModel(trx, log, model.id, { isActive: true }, "activated");
  log.activationChanged({ userId: model.userId, fromModelId: current?.id, toModelId: model.id, reason, ...options });
  return activated;
}

/** Makes the user's active model inactive; the user then has none. */
export async function deactivate(trx: Tx, log: ChangeLog, model: VoiceModelRecord, reason: ActivationReason): Promise<VoiceModelRecord> {
  const deactivated = await repo.patchModel(trx, log, model.id, { isActive: false }, "deactivated");
  log.activationChanged({ userId: model.userId, fromModelId: model.id, toModelId: undefined, reason });
  return deactivated;
}

/**
 * A model just became completed (created so, or updated to it): it takes over when the user has
 * no active model, or when its stored score is above 0.800.
 */
export async function onCompleted(trx: Tx, log: ChangeLog, model: VoiceModelRecord): Promise<VoiceModelRecord> {
  const current = await repo.findActiveModel(trx, model.userId);
  const deserves = !current || Math.round(model.qualityScore * 1000) > AUTO_ACTIVATE_ABOVE_MILLIS;
  return deserves && current?.id !== model.id ? makeActive(trx, log, model, current ? "high_quality" : "first_model") : model;
}

/**
 * The active model stopped being eligible (deleted or left "completed", already marked inactive):
 * the next best completed model takes its place. Returns the new active model, if any. The
 * history row names the former model and its successor (none when there is no other).
 */
export async function replaceActive(
  trx: Tx,
  log: ChangeLog,
  former: VoiceModelRecord,
  reason: "model_deleted" | "model_not_completed",
): Promise<VoiceModelRecord | undefined> {
  // The shared ranking with no criteria (no latency needed): highest score, newest on ties.
  // With CONSENT_REQUIRED only a model with consent may take over.
  const completed = (await repo.liveModels(trx, former.userId, { status: "completed", excludeIds: [former.id] })).filter((m) => !log.consentRequired || m.consentId);
  const next = rankModels(completed.map((model) => ({ model, averageLatency: undefined })), {}).ranked[0]?.model;
  const activated = next ? await repo.patchModel(trx, log, next.id, { isActive: true }, "activated") : undefined;
  log.activationChanged({ userId: former.userId, fromModelId: former.id, toModelId: activated?.id, reason });
  return activated;
}
