import type { Knex } from "knex";
import { resolveTargetUser } from "../auth/caller";
import { inTransaction } from "../db/transaction";
import { AppError, invalidArgument } from "../errors";
import type { Actor } from "../voice-models/model-events";
import { EventFeed, EVENT_PAGE, Watcher } from "./event-feed";
import { eventsAfter, newestEventId, pruneBefore, prunedThroughId, type EventScope, type StoredEvent } from "./event-repository";

/** What a watch stream yields: an event the caller may see, or a heartbeat. */
export type WatchItem =
  | { kind: "event"; event: StoredEvent; /** The share targets this caller may see. */ targets: readonly string[] }
  | { kind: "heartbeat"; resumeAfter: bigint };

export interface EventServiceDeps {
  knex: Knex;
  feed: EventFeed;
  /** Ids of the live models shared with a user now. */
  sharedModelIds: (userId: string) => Promise<string[]>;
  /** The hash erasure puts in place of a user id. */
  userHash: (userId: string) => string;
  heartbeatMs: number;
  retentionHours: number;
}

/** Whom a stream is for, and the per-event access check made as each event is delivered. */
class Audience {
  constructor(
    readonly scope: EventScope,
    /** Models shared with a user watcher, kept current by the share events the stream passes. */
    private readonly shared: Set<string>,
  ) {}

  /** What the caller may see of the event (undefined: nothing), updating the shares it passes. */
  view(event: StoredEvent): { targets: readonly string[] } | undefined {
    const scope = this.scope;
    if (scope.kind === "all") return { targets: event.audience };
    if (scope.kind === "owner") return event.userId === scope.userId || event.userId === scope.userHash ? { targets: event.audience } : undefined;
    if (event.userId === scope.userId || event.userId === scope.userHash) return { targets: event.audience };
    const aimedAtMe = event.audience.includes(scope.userId);
    if (aimedAtMe && event.modelId && event.type === "shared") this.shared.add(event.modelId);
    if (aimedAtMe && event.modelId && event.type === "share_revoked") {
      this.shared.delete(event.modelId);
      return { targets: [scope.userId] };
    }
    return event.modelId && this.shared.has(event.modelId) ? { targets: aimedAtMe ? [scope.userId] : [] } : undefined;
  }

  sharedIds(): string[] {
    return [...this.shared];
  }

  /** The watched user's data was erased: nothing more will come. */
  endsWith(event: StoredEvent): boolean {
    return event.type === "erased" && this.scope.kind !== "all" && event.userId === this.scope.userHash;
  }
}

/** WatchVoiceModelEvents and the retention of the outbox. */
export class EventService {
  constructor(private readonly deps: EventServiceDeps) {}

  async *watch(actor: Actor, req: { userId?: string; afterEventId?: bigint }, signal: AbortSignal): AsyncIterable<WatchItem> {
    const audience = await this.audienceOf(actor, req.userId);
    const { knex, feed } = this.deps;
    let cursor = await this.startAfter(req.afterEventId);
    const watcher = new Watcher();
    await feed.join(watcher);
    try {
      yield { kind: "heartbeat", resumeAfter: cursor };
      for (;;) {
        if (watcher.ended) throw watcher.ended;
        if (signal.aborted) return;
        if (watcher.mustCatchUp) {
          // From here on the feed queues what it reads, so the table and the queue overlap and
          // nothing falls between them; the cursor drops what comes twice.
          watcher.mustCatchUp = false;
          watcher.queue = [];
          for (let more = true; more && !watcher.ended && !signal.aborted; ) {
            const scope = audience.scope.kind === "user" ? { ...audience.scope, sharedModelIds: audience.sharedIds() } : audience.scope;
            const events = await eventsAfter(knex, cursor, scope, EVENT_PAGE);
            more = events.length === EVENT_PAGE;
            for (const event of events) {
              const sharedBefore = audience.sharedIds().length;
              const seen = audience.view(event);
              cursor = event.id;
              if (seen) yield { kind: "event", event, targets: seen.targets };
              if (audience.endsWith(event)) return;
              // A new share widens what the table read must return: read again from here.
              if (audience.sharedIds().length > sharedBefore) {
                more = true;
                break;
              }
            }
          }
          continue;
        }
        const event = watcher.queue.shift();
        if (event) {
          if (event.id <= cursor) continue;
          cursor = event.id;
          const seen = audience.view(event);
          if (seen) yield { kind: "event", event, targets: seen.targets };
          if (audience.endsWith(event)) return;
          continue;
        }
        if (!(await watcher.next(this.deps.heartbeatMs, signal))) yield { kind: "heartbeat", resumeAfter: cursor };
      }
    } finally {
      feed.leave(watcher);
    }
  }

  private async audienceOf(actor: Actor, requested: string | undefined): Promise<Audience> {
    const { caller } = actor;
    if (caller.privileged && !requested) return new Audience({ kind: "all" }, new Set());
    const userId = resolveTargetUser(caller, requested);
    const userHash = this.deps.userHash(userId);
    if (caller.privileged) return new Audience({ kind: "owner", userId, userHash }, new Set());
    const shared = new Set(await this.deps.sharedModelIds(userId));
    return new Audience({ kind: "user", userId, userHash, sharedModelIds: [] }, shared);
  }

  /** Where a stream starts: after the given id, refused when the retention deleted what follows it. */
  private async startAfter(afterEventId: bigint | undefined): Promise<bigint> {
    const { knex } = this.deps;
    const newest = await newestEventId(knex);
    if (afterEventId === undefined) return newest;
    if (afterEventId < 0n) throw invalidArgument("afterEventId", "must be 0 or more");
    if (afterEventId > newest) throw invalidArgument("afterEventId", `is after the newest event (${newest})`);
    const pruned = await prunedThroughId(knex);
    if (afterEventId < pruned) {
      throw new AppError(
        "EVENTS_EXPIRED",
        `events after ${afterEventId} are no longer kept (retention ${this.deps.retentionHours} h, kept from ${pruned + 1n}); list the models again and watch without afterEventId`,
        { field: "afterEventId" },
      );
    }
    return afterEventId;
  }

  /** Deletes events older than the retention, in batches; returns how many. */
  async prune(batch = 5_000): Promise<number> {
    const cutoff = new Date(Date.now() - this.deps.retentionHours * 3_600_000);
    let total = 0;
    for (;;) {
      const n = await inTransaction(this.deps.knex, (trx) => pruneBefore(trx, cutoff, batch));
      total += n;
      if (n < batch) return total;
    }
  }
}
