import type { Knex } from "knex";
import type { ListActivationHistoryRequest, RollbackActiveModelRequest } from "../../gen/voicemodel/v1/activation_history_pb";
import { resolveTargetUser } from "../auth/caller";
import type { Tx } from "../db/transaction";
import { AppError } from "../errors";
import type { PageTokens, PositionField } from "../paging/page-token";
import * as activation from "./activation";
import * as history from "./activation-history";
import type { HistoryEntry } from "./activation-history";
import type { Actor } from "./model-events";
import * as repo from "./repository";
import * as valid from "./validation";
import type { VoiceModelService } from "./voice-model-service";
import type { VoiceModelRecord } from "./voice-model";

const CURSOR: readonly PositionField[] = [{ kind: "serial" }];

export interface HistoryPage {
  entries: HistoryEntry[];
  nextPageToken: string;
}

/** What a rollback makes active, and the entry it undoes (the next rollback continues before it). */
interface RollbackPlan {
  targetId: string;
  undone: HistoryEntry | undefined;
}

/** ListActivationHistory and RollbackActiveModel: reading the activation history and walking it back. */
export class ActivationHistoryService {
  constructor(
    private readonly knex: Knex,
    private readonly models: VoiceModelService,
    private readonly pageTokens: PageTokens,
  ) {}

  async list(actor: Actor, req: ListActivationHistoryRequest): Promise<HistoryPage> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const limit = valid.pageLimit(req.limit);
    // A token opens only for the caller and user it was minted for.
    const scope = { callerId: actor.caller.userId, filters: { userId } };
    let beforeSeq: number | undefined;
    if (req.pageToken) beforeSeq = Number(this.pageTokens.open("ListActivationHistory", scope, CURSOR, req.pageToken)[0]);
    const entries = await history.listEntries(this.knex, userId, limit, beforeSeq);
    const last = entries[entries.length - 1];
    const nextPageToken = entries.length === limit && last ? this.pageTokens.mint("ListActivationHistory", scope, CURSOR, [String(last.seq)]) : "";
    return { entries, nextPageToken };
  }

  /**
   * Under the owner lock: checks the expected active model, finds the target by the history,
   * checks it may be active, and makes it so through the activation rule (one "rollback" entry).
   */
  async rollback(actor: Actor, req: RollbackActiveModelRequest): Promise<{ model: VoiceModelRecord; entry: HistoryEntry }> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const entryId = req.historyEntryId === undefined ? undefined : valid.uuid(req.historyEntryId, "historyEntryId", "a history entry id");
    const expected = req.expectedActiveModelId;
    const expectedId = expected === undefined || expected === "" ? expected : valid.modelId(expected, "expectedActiveModelId");
    return this.models.writeForUser(actor, userId, async (trx, log) => {
      const current = await repo.findActiveModel(trx, userId);
      if (expectedId !== undefined && (current?.id ?? "") !== expectedId) {
        throw new AppError(
          "ACTIVE_MODEL_CHANGED",
          `the active model of user ${userId} is ${current ? current.id : "none"}, not ${expectedId || "none"}`,
          { userId, field: "expectedActiveModelId", modelId: current?.id },
        );
      }
      const plan = entryId ? await toEntry(trx, userId, entryId, current) : await undoLatest(trx, userId, current);
      const target = await checkedTarget(trx, userId, plan.targetId);
      const model = await activation.makeActive(trx, log, target, "rollback", { undoneEntryId: plan.undone?.id });
      // Written now (not at commit) so the reply carries it.
      await history.writeHistory(trx, log, actor);
      const change = log.activations.findLast((a) => a.reason === "rollback" && a.userId === userId);
      const entry = change?.entryId ? await history.findEntry(trx, userId, change.entryId) : undefined;
      if (!entry) throw new AppError("INTERNAL", `rollback for user ${userId} wrote no history entry`);
      return { model, entry };
    });
  }
}

/**
 * Undo: the latest change not yet undone, and the model active before it. A rollback entry
 * sends the walk to the entry before the one it undid (so rollbacks go further back, never
 * toggle); entries with no model before them, or whose previous model is the active one, are
 * passed over.
 */
async function undoLatest(trx: Tx, userId: string, current: VoiceModelRecord | undefined): Promise<RollbackPlan> {
  let cursor = await history.entryBefore(trx, userId);
  while (cursor) {
    if (cursor.reason === "rollback" && cursor.undoneEntryId) {
      const undone = await history.findEntry(trx, userId, cursor.undoneEntryId);
      cursor = undone ? await history.entryBefore(trx, userId, undone.seq) : undefined;
      continue;
    }
    if (cursor.previousModelId && cursor.previousModelId !== current?.id) return { targetId: cursor.previousModelId, undone: cursor };
    cursor = await history.entryBefore(trx, userId, cursor.seq);
  }
  throw new AppError("NOTHING_TO_ROLL_BACK", `the activation history of user ${userId} holds no earlier model to make active`, { userId });
}

/** Back to a given entry: the model it made active; the changes after it count as undone. */
async function toEntry(trx: Tx, userId: string, entryId: string, current: VoiceModelRecord | undefined): Promise<RollbackPlan> {
  const entry = await history.findEntry(trx, userId, entryId);
  if (!entry) throw new AppError("HISTORY_ENTRY_NOT_FOUND", `activation history entry ${entryId} not found for user ${userId}`, { field: "historyEntryId", userId });
  if (!entry.newModelId) {
    throw new AppError("NOTHING_TO_ROLL_BACK", `activation history entry ${entryId} made no model active`, { field: "historyEntryId", userId });
  }
  if (entry.newModelId === current?.id) {
    throw new AppError("ALREADY_ACTIVE", `voice model ${entry.newModelId} (of history entry ${entryId}) is already active`, { modelId: entry.newModelId });
  }
  return { targetId: entry.newModelId, undone: await history.entryAfter(trx, userId, entry.seq) };
}

/** The rollback's model, locked, if it may become active again; else which reason it may not. */
async function checkedTarget(trx: Tx, userId: string, modelId: string): Promise<VoiceModelRecord> {
  const model = await repo.findModelForUpdate(trx, modelId);
  if (!model || model.userId !== userId) {
    throw new AppError("ROLLBACK_TARGET_GONE", `voice model ${modelId} to roll back to no longer exists for user ${userId}`, { modelId, userId });
  }
  if (model.deletedAt) {
    throw new AppError("ROLLBACK_TARGET_DELETED", `voice model ${modelId} to roll back to is deleted; UndeleteVoiceModel brings it back`, { modelId });
  }
  if (model.status !== "completed") {
    throw new AppError("MODEL_NOT_COMPLETED", `voice model ${modelId} to roll back to is ${model.status}; only completed models can be active`, { modelId });
  }
  return model;
}
