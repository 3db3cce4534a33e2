import type { Caller } from "../auth/caller";
import { accessDenied } from "../errors";
import type { Db } from "../db/transaction";
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

/** What a share grants a user on a model, if any; the sharing room provides it. */
export type ShareLookup = (db: Db, modelId: string, userId: string) => Promise<"view" | "use" | undefined>;

/** No shares at all: with sharing switched off, shares made earlier stop granting access too. */
export const NO_SHARES: ShareLookup = async () => undefined;

/** Access that shares can grant, on top of the owner's and privileged callers'. */
export class SharedAccess {
  constructor(private readonly permission: ShareLookup) {}

  /**
   * Who may view a model (GetVoiceModel, ListSharedVoiceModels): the owner, service and admin
   * callers, and users it is shared with ("view" or "use"). Asks the database only for strangers.
   */
  async canView(db: Db, caller: Caller, model: Owned): Promise<boolean> {
    if (canRead(caller, model)) return true;
    return (await this.permission(db, model.id, caller.userId)) !== undefined;
  }

  /**
   * Who may use a model (usage stats, compare, synthesis by the TTS service on their behalf): the
   * owner, service and admin callers, and users it is shared with "use".
   */
  async canUse(db: Db, caller: Caller, model: Owned): Promise<boolean> {
    if (canRead(caller, model)) return true;
    return (await this.permission(db, model.id, caller.userId)) === "use";
  }

  /** Whether a user (not a caller: e.g. the user a service synthesizes for) may use a model. */
  async userCanUse(db: Db, userId: string, model: Owned): Promise<boolean> {
    if (userId === model.userId) return true;
    return (await this.permission(db, model.id, userId)) === "use";
  }

  async assertCanView(db: Db, caller: Caller, model: Owned): Promise<void> {
    if (!(await this.canView(db, caller, model))) throw accessDenied(`voice model ${model.id} belongs to another user`, { modelId: model.id });
  }

  async assertCanUse(db: Db, caller: Caller, model: Owned): Promise<void> {
    if (!(await this.canUse(db, caller, model))) {
      throw accessDenied(`voice model ${model.id} is not shared with ${caller.userId} for use`, { modelId: model.id });
    }
  }
}
