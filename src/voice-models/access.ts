import type { Caller } from "../auth/caller";
import { accessDenied } from "../errors";
import type { Db } from "../db/transaction";
import { findPermission } from "../sharing/share-repository";
import type { VoiceModelRecord } from "./voice-model";

/** Who may read a model: its owner, and service and admin callers (shares extend this). */
export function canRead(caller: Caller, model: Pick<VoiceModelRecord, "userId">): boolean {
  return caller.privileged || caller.userId === model.userId;
}

/** Who may change a model: its owner, and service and admin callers. */
export function canWrite(caller: Caller, model: Pick<VoiceModelRecord, "userId">): boolean {
  return caller.privileged || caller.userId === model.userId;
}

export function assertCanRead(caller: Caller, model: Pick<VoiceModelRecord, "userId" | "id">): void {
  if (!canRead(caller, model)) throw accessDenied(`voice model ${model.id} belongs to another user`, { modelId: model.id });
}

export function assertCanWrite(caller: Caller, model: Pick<VoiceModelRecord, "userId" | "id">): void {
  if (!canWrite(caller, model)) throw accessDenied(`voice model ${model.id} belongs to another user`, { modelId: model.id });
}

type Owned = Pick<VoiceModelRecord, "userId" | "id">;

/**
 * Who may view a model (GetVoiceModel, ListSharedVoiceModels): the owner, service and admin
 * callers, and users it is shared with ("view" or "use"). Asks the database only for strangers.
 */
export async function canView(db: Db, caller: Caller, model: Owned): Promise<boolean> {
  if (canRead(caller, model)) return true;
  return (await findPermission(db, model.id, caller.userId)) !== undefined;
}

/**
 * Who may use a model (usage stats, compare, synthesis by the TTS service on their behalf): the
 * owner, service and admin callers, and users it is shared with "use".
 */
export async function canUse(db: Db, caller: Caller, model: Owned): Promise<boolean> {
  if (canRead(caller, model)) return true;
  return (await findPermission(db, model.id, caller.userId)) === "use";
}

/** Whether a user (not a caller: e.g. the user a service synthesizes for) may use a model. */
export async function userCanUse(db: Db, userId: string, model: Owned): Promise<boolean> {
  if (userId === model.userId) return true;
  return (await findPermission(db, model.id, userId)) === "use";
}

export async function assertCanView(db: Db, caller: Caller, model: Owned): Promise<void> {
  if (!(await canView(db, caller, model))) throw accessDenied(`voice model ${model.id} belongs to another user`, { modelId: model.id });
}

export async function assertCanUse(db: Db, caller: Caller, model: Owned): Promise<void> {
  if (!(await canUse(db, caller, model))) {
    throw accessDenied(`voice model ${model.id} is not shared with ${caller.userId} for use`, { modelId: model.id });
  }
}
