import type { Caller } from "../auth/caller";
import type { Tx } from "../db/transaction";
import type { VoiceModelRecord } from "./voice-model";

/** Who made a change, for listeners that record it (audit) or scope it. */
export interface Actor {
  readonly caller: Caller;
  readonly requestId: string;
  readonly clientAddress: string;
}

export type ModelChangeKind = "created" | "updated" | "deleted" | "activated" | "deactivated";

export interface ModelChange {
  kind: ModelChangeKind;
  /** The model after the change. */
  model: VoiceModelRecord;
}

/**
 * Runs inside the writing transaction, after the domain's own rows changed and before commit:
 * whatever it writes (cache invalidation, audit rows, share clean-up) commits or rolls back with
 * the change itself.
 */
export type ModelChangeListener = (trx: Tx, changes: readonly ModelChange[], actor: Actor) => Promise<void>;

/** The changes one transaction makes, in order, handed to the listeners before commit. */
export class ChangeLog {
  readonly changes: ModelChange[] = [];

  add(kind: ModelChangeKind, model: VoiceModelRecord): VoiceModelRecord {
    this.changes.push({ kind, model });
    return model;
  }
}
