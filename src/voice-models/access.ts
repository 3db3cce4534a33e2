import type { Caller } from "../auth/caller";
import { accessDenied } from "../errors";
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
