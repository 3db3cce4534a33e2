import type { Caller } from "../auth/caller";
import type { Tx } from "../db/transaction";
import type { VoiceModelRecord } from "./voice-model";

/** Who made a change, for listeners that record it (audit) or scope it. */
export interface Actor {
  readonly caller: Caller;
  readonly requestId: string;
  readonly clientAddress: string;
}

/** "deleted" is the soft delete; "purged" is the row removed for good (retention, erasure). */
export type ModelChangeKind = "created" | "updated" | "deleted" | "activated" | "deactivated" | "purged";

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
export type ModelChangeListener = (trx: Tx, changes: readonly ModelChange[], actor: Actor, log: ChangeLog) => Promise<void>;

/**
 * What a transaction's "created" and "updated" changes mean, where that is more than their kind
 * says (the change events name it; the other listeners need only the kind).
 */
export type WriteCause = "status_changed" | "undeleted" | "restored" | "file_stored";

/**
 * The changes one transaction makes, in order, handed to the listeners before commit. The
 * repository's write functions record every row they write here, so a write cannot skip it.
 */
export class ChangeLog {
  readonly changes: ModelChange[] = [];
  cause: WriteCause | undefined;
  /** Set by account deletion: the listeners forget the user instead of describing the changes. */
  erasure: { userId: string; userHash: string } | undefined;

  add(kind: ModelChangeKind, model: VoiceModelRecord): VoiceModelRecord {
    // A second update of a model this transaction already created or updated (its file attached
    // after the insert) refreshes that change rather than counting as another.
    if (kind === "updated") {
      const earlier = this.changes.find((c) => c.model.id === model.id && (c.kind === "created" || c.kind === "updated"));
      if (earlier) {
        earlier.model = model;
        return model;
      }
    }
    this.changes.push({ kind, model });
    return model;
  }
}

/** Runs fn in one transaction; the changes its repository writes log reach the listeners before commit. */
export type ModelWrite = <T>(actor: Actor, fn: (trx: Tx, log: ChangeLog) => Promise<T>) => Promise<T>;
