import type { Tx } from "../db/transaction";
import type { ModelChange, ModelChangeListener, WriteCause } from "../voice-models/model-events";
import { insertEvents, forgetUser, type EventType, type NewEvent } from "./event-repository";

/** The NOTIFY channel that wakes every instance's event feed once events commit (no payload). */
export const EVENTS_CHANNEL = "voice_model_events";

/**
 * Writes change events in the transaction of the change (the outbox), then wakes the readers:
 * this instance's feed directly once the transaction commits, the other instances' through
 * NOTIFY (delivered at commit, and only if it commits).
 *
 * Commit order: insertEvents takes one advisory lock per transaction just before its insert and
 * holds it to commit, so no transaction can take an id while another that took a lower one is
 * still open. Readers therefore never see id N before every id below N is committed or gone, and
 * "every event after the last id I saw" misses nothing. The cost is that event-writing
 * transactions pass their last statement and commit one at a time; the outbox listener runs last
 * so the lock is held for that moment only.
 */
export class EventOutbox {
  constructor(
    /** PostgreSQL with other instances to wake (on PGlite this process is the only reader). */
    private readonly notifyOthers: boolean,
    /** This instance's feed. */
    private readonly wakeLocal: () => void,
  ) {}

  async append(trx: Tx, events: readonly NewEvent[]): Promise<void> {
    if (events.length === 0) return;
    await insertEvents(trx, events);
    await this.announce(trx);
  }

  private async announce(trx: Tx): Promise<void> {
    if (this.notifyOthers) await trx.raw(`SELECT pg_notify(?, '')`, [EVENTS_CHANNEL]);
    trx.executionPromise.then(this.wakeLocal, () => undefined);
  }

  /**
   * The model-change listener (registered last): one event per change, or for an account
   * deletion, the user's earlier events blanked and one "erased" event.
   */
  readonly onModelChange: ModelChangeListener = async (trx, changes, _actor, log) => {
    if (log.erasure) {
      const { userId, userHash } = log.erasure;
      await forgetUser(trx, userId, userHash);
      await this.append(trx, [{ type: "erased", userId: userHash }]);
      return;
    }
    await this.append(trx, changes.map((change) => eventOf(change, log.cause)));
  };
}

/** A change as an event: what the transaction's cause says an update (or a restored row) was. */
function eventOf(change: ModelChange, cause: WriteCause | undefined): NewEvent {
  const { kind, model } = change;
  const type: EventType = kind === "updated" && cause ? cause : kind === "created" && cause === "restored" ? "restored" : kind;
  return { type, userId: model.userId, model: kind === "purged" ? undefined : model, modelId: model.id };
}
