import type { Caller } from "../auth/caller";
import type { Tx } from "../db/transaction";
import type { VoiceModelRecord } from "./voice-model";

/** Who made a change, for listeners that record it (audit) or scope it. */
export interface Actor {
  readonly caller: Caller;
  readonly requestId: string;
  readonly clientAddress: string;
  /** The deadline (epoch ms) of the call, if it has one: its writing transactions commit only before it. */
  readonly deadlineMs?: number;
}

/** "deleted" is the soft delete; "purged" is the row removed for good (retention, erasure). */
export type ModelChangeKind = "created" | "updated" | "deleted" | "activated" | "deactivated" | "purged";

export interface ModelChange {
  kind: ModelChangeKind;
  /** The model after the change. */
  model: VoiceModelRecord;
  /**
   * Whether the model was its user's active model before the change, set by the repository's
   * writes that can change it (undefined: the write could not). The history guard reads it.
   */
  wasActive?: boolean;
  /** Whether it was a live completed model before the change (false for inserts; the consent guard). */
  wasCompleted?: boolean;
}

/** Why a user's active model changed: the closed list documented in activation_history.proto. */
export const ACTIVATION_REASONS = [
  "first_model",
  "high_quality",
  "activated",
  "deactivated",
  "selected",
  "model_deleted",
  "model_not_completed",
  "restored",
  "rollback",
  "account_deleted",
  "migrated",
] as const;
export type ActivationReason = (typeof ACTIVATION_REASONS)[number];

/** One change of a user's active model, as the activation history records it. */
export interface ActivationChange {
  userId: string;
  /** The model active before; undefined when none was. */
  fromModelId: string | undefined;
  /** The model active after; undefined when none is. */
  toModelId: string | undefined;
  reason: ActivationReason;
  /** For rollbacks: the history entry this one undid. */
  undoneEntryId?: string;
  /** Set once the history row is written (its id). */
  entryId?: string;
}

/** Whether a model counts as its user's active one (the one-active index's condition). */
export const isLiveActive = (model: Pick<VoiceModelRecord, "isActive" | "deletedAt">) => model.isActive && !model.deletedAt;

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
  /** The active-model changes of the transaction, one history row each. */
  readonly activations: ActivationChange[] = [];
  /** Models some activation change of this transaction names (what the history guard checks). */
  private readonly recorded = new Set<string>();
  cause: WriteCause | undefined;
  /**
   * Models deleted for good because their consent was withdrawn: the listeners that run after
   * the audit scrub every trace of them but their ids (see withdraw).
   */
  readonly withdrawn = new Set<string>();
  /** Set by account deletion: the listeners forget the user instead of describing the changes. */
  erasure: { userId: string; userHash: string } | undefined;

  /** CONSENT_REQUIRED: no model without consent may become completed or active in this transaction. */
  constructor(readonly consentRequired = false) {}

  add(kind: ModelChangeKind, model: VoiceModelRecord, wasActive?: boolean, wasCompleted?: boolean): VoiceModelRecord {
    // A second update of a model this transaction already created or updated (its file attached
    // after the insert) refreshes that change rather than counting as another.
    if (kind === "updated") {
      const earlier = this.changes.find((c) => c.model.id === model.id && (c.kind === "created" || c.kind === "updated"));
      if (earlier) {
        earlier.model = model;
        earlier.wasActive ??= wasActive;
        earlier.wasCompleted ??= wasCompleted;
        return model;
      }
    }
    const change: ModelChange = { kind, model };
    if (wasActive !== undefined) change.wasActive = wasActive;
    if (wasCompleted !== undefined) change.wasCompleted = wasCompleted;
    this.changes.push(change);
    return model;
  }

  /**
   * The consent guard: models without consent this transaction made live and completed, or
   * active (a model that already was stays as it is: switching CONSENT_REQUIRED on changes nothing).
   */
  consentlessPromotions(): ModelChange[] {
    if (!this.consentRequired) return [];
    return this.changes.filter((c) => {
      if (c.kind === "purged" || c.kind === "deleted" || c.model.deletedAt || c.model.consentId) return false;
      const completedNow = c.model.status === "completed";
      return (completedNow && c.wasCompleted === false) || (c.model.isActive && (c.kind === "activated" || c.wasActive === false));
    });
  }

  /**
   * Records a change of a user's active model. A change that continues the user's previous one
   * of the same reason in this transaction (a restore deactivating one model, then activating
   * another) joins it, so one transaction's change is one history row.
   */
  activationChanged(change: ActivationChange): ActivationChange | undefined {
    if (change.fromModelId) this.recorded.add(change.fromModelId);
    if (change.toModelId) this.recorded.add(change.toModelId);
    const last = this.activations.findLast((a) => a.userId === change.userId);
    if (last && last.reason === change.reason && last.toModelId === change.fromModelId && !change.undoneEntryId) {
      last.toModelId = change.toModelId;
      // Back where it started: the active model did not change after all.
      if (last.fromModelId === last.toModelId) this.activations.splice(this.activations.indexOf(last), 1);
      return last;
    }
    if (change.fromModelId === change.toModelId) return undefined;
    this.activations.push(change);
    return change;
  }

  /**
   * A withdrawn model: the activation changes of this transaction no longer name it (the model
   * that took over is recorded as coming after none), and the listeners are told.
   */
  withdraw(modelId: string): void {
    this.withdrawn.add(modelId);
    for (const change of [...this.activations]) {
      if (change.fromModelId === modelId) change.fromModelId = undefined;
      if (change.toModelId === modelId) change.toModelId = undefined;
      if (change.fromModelId === change.toModelId) this.activations.splice(this.activations.indexOf(change), 1);
    }
  }

  /**
   * The history guard: every model whose active state this transaction flipped must be named by
   * an activation change, so no write can change the active model without a history row.
   */
  unrecordedActivations(): ModelChange[] {
    return this.changes.filter((c) => {
      const activeNow = c.kind !== "purged" && isLiveActive(c.model);
      const before = c.kind === "purged" ? isLiveActive(c.model) : c.wasActive;
      const flipped = c.kind === "activated" || c.kind === "deactivated" || (before !== undefined && before !== activeNow);
      return flipped && !this.recorded.has(c.model.id);
    });
  }
}

/** Runs fn in one transaction; the changes its repository writes log reach the listeners before commit. */
export type ModelWrite = <T>(actor: Actor, fn: (trx: Tx, log: ChangeLog) => Promise<T>) => Promise<T>;
