import type { Knex } from "knex";
import type {
  ListSharedVoiceModelsRequest,
  RevokeShareRequest,
  ShareVoiceModelRequest,
} from "../../gen/voicemodel/v1/governance_pb";
import { byActor, recordAudit } from "../audit/audit-log";
import { resolveTargetUser } from "../auth/caller";
import { inTransaction, type Tx } from "../db/transaction";
import { AppError, accessDenied, invalidArgument, modelNotFound } from "../errors";
import { isUserId } from "../auth/user-id";
import { TIME_MS, type PageTokens, type PositionField } from "../paging/page-token";
import type { Actor, ModelChangeListener } from "../voice-models/model-events";
import * as models from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import { assertCanWrite } from "../voice-models/access";
import type { EventOutbox } from "../events/event-outbox";
import * as shares from "./share-repository";

export const MAX_SHARE_TARGETS = 100;

export interface SharedModel {
  model: VoiceModelRecord;
  share: shares.ShareRecord;
}

function targetUsers(ids: string[], ownerId: string, field: string, required: boolean): string[] {
  const unique = [...new Set(ids)];
  if (required && unique.length === 0) throw invalidArgument(field, "names no user");
  if (unique.length > MAX_SHARE_TARGETS) throw invalidArgument(field, `at most ${MAX_SHARE_TARGETS} users at once, got ${unique.length}`);
  for (const id of unique) {
    if (!isUserId(id)) throw invalidArgument(field, `"${id.slice(0, 64)}" is not a user id`);
    if (required && id === ownerId) throw invalidArgument(field, "a model cannot be shared with its owner");
  }
  return unique;
}

function permissionOf(values: string[]): shares.SharePermission {
  if (values.length === 0) throw invalidArgument("permissions", `is required: "view" or "use"`);
  for (const value of values) {
    if (!(shares.PERMISSIONS as readonly string[]).includes(value)) throw invalidArgument("permissions", `"${value}" is not "view" or "use"`);
  }
  return values.includes("use") ? "use" : "view";
}

/** Position after a share in the list order (shared at, model id; both descending). */
const CURSOR: readonly PositionField[] = [TIME_MS, { kind: "uuid" }];
const SHARES_CURSOR: readonly PositionField[] = [{ kind: "int", min: 0, max: 1_000_000_000 }];

/** Sharing a model with other users; only its owner (or service/admin for them) decides. */
export class SharingService {
  constructor(
    private readonly knex: Knex,
    private readonly enabled: boolean,
    private readonly pageTokens: PageTokens,
    private readonly events: EventOutbox,
  ) {}

  private assertEnabled(): void {
    if (!this.enabled) throw new AppError("SHARING_DISABLED", "sharing is switched off on this service");
  }

  async share(actor: Actor, req: ShareVoiceModelRequest): Promise<shares.ShareRecord[]> {
    this.assertEnabled();
    const ownerId = resolveTargetUser(actor.caller, req.ownerId, "ownerId");
    const modelId = valid.modelId(req.modelId);
    const targets = targetUsers(req.targetUserIds, ownerId, "targetUserIds", true);
    const permission = permissionOf(req.permissions);
    return inTransaction(this.knex, async (trx) => {
      // FOR SHARE: a concurrent delete (which holds the row FOR UPDATE) finishes first, and then
      // this sees deleted_at; the delete's listener ends shares in its own transaction.
      const model = await models.findModelForShare(trx, modelId);
      if (!model || model.deletedAt) throw modelNotFound(modelId);
      if (model.userId !== ownerId) throw accessDenied(`voice model ${modelId} does not belong to ${ownerId}`, { modelId });
      const granted = await shares.upsertShares(trx, { modelId, ownerId, permission }, targets);
      await recordAudit(trx, {
        ...byActor(actor),
        action: "share.granted",
        targetUserId: ownerId,
        modelId,
        userIds: targets,
        details: { targetUserIds: targets, permission },
      });
      await this.events.append(trx, [{ type: "shared", userId: ownerId, model, audience: targets }]);
      return granted;
    }, { deadlineMs: actor.deadlineMs });
  }

  async revoke(actor: Actor, req: RevokeShareRequest): Promise<number> {
    const modelId = valid.modelId(req.modelId);
    return inTransaction(this.knex, async (trx) => {
      const model = await models.findModel(trx, modelId);
      if (!model) throw modelNotFound(modelId);
      assertCanWrite(actor.caller, model);
      const targets = req.targetUserIds.length ? targetUsers(req.targetUserIds, model.userId, "targetUserIds", false) : undefined;
      const revoked = await shares.deleteShares(trx, modelId, targets);
      await recordAudit(trx, {
        ...byActor(actor),
        action: "share.revoked",
        targetUserId: model.userId,
        modelId,
        userIds: [...(targets ?? []), ...revoked],
        details: { targetUserIds: targets ?? "all", revoked: revoked.length },
      });
      if (revoked.length > 0) await this.events.append(trx, [{ type: "share_revoked", userId: model.userId, modelId, audience: revoked }]);
      return revoked.length;
    }, { deadlineMs: actor.deadlineMs });
  }

  /** What an owner has shared (owner; service and admin name the owner), newest first. */
  async listShares(actor: Actor, req: { userId?: string; modelId?: string; limit?: number; pageToken?: string }): Promise<{ shares: shares.ShareRecord[]; nextPageToken: string }> {
    const ownerId = resolveTargetUser(actor.caller, req.userId);
    const modelId = req.modelId === undefined ? undefined : valid.modelId(req.modelId);
    const limit = valid.pageLimit(req.limit);
    // Offset positions: a share's key holds a user id, which a position field cannot carry.
    const scope = { callerId: actor.caller.userId, filters: { ownerId, modelId: modelId ?? "" } };
    const offset = req.pageToken ? (this.pageTokens.open("ListModelShares", scope, SHARES_CURSOR, req.pageToken)[0] as number) : 0;
    const page = await shares.listSharesBy(this.knex, ownerId, modelId, limit, offset);
    const nextPageToken = page.length === limit ? this.pageTokens.mint("ListModelShares", scope, SHARES_CURSOR, [offset + limit]) : "";
    return { shares: page, nextPageToken };
  }

  async listShared(actor: Actor, req: ListSharedVoiceModelsRequest): Promise<{ items: SharedModel[]; nextPageToken: string }> {
    this.assertEnabled();
    const userId = resolveTargetUser(actor.caller, req.userId);
    const limit = valid.pageLimit(req.limit);
    // A token opens only for the caller and the user whose list it pages.
    const scope = { callerId: actor.caller.userId, filters: { userId } };
    let after: { sharedAtMs: number; modelId: string } | undefined;
    if (req.pageToken) {
      const [sharedAtMs, modelId] = this.pageTokens.open("ListSharedVoiceModels", scope, CURSOR, req.pageToken);
      after = { sharedAtMs: sharedAtMs as number, modelId: modelId as string };
    }
    const page = await shares.listSharedWith(this.knex, userId, limit, after);
    const items: SharedModel[] = [];
    for (const { share, modelId } of page) {
      const model = await models.findModel(this.knex, modelId);
      if (model) items.push({ model, share });
    }
    const last = page[page.length - 1];
    const nextPageToken = page.length === limit ? this.pageTokens.mint("ListSharedVoiceModels", scope, CURSOR, [last.share.sharedAt.getTime(), last.modelId]) : "";
    return { items, nextPageToken };
  }
}

/** Deleting a model ends its shares, in the deleting transaction. */
export function endSharesOfDeletedModels(events: EventOutbox): ModelChangeListener {
  return (trx, changes) =>
    endSharesOfModels(
      trx,
      events,
      changes.filter((c) => c.kind === "deleted" || c.kind === "purged").map((c) => c.model.id),
    );
}

/** Ends every share of the models in the caller's transaction; the sharees are told (share_revoked). */
export async function endSharesOfModels(trx: Tx, events: EventOutbox, modelIds: string[]): Promise<void> {
  const ended = await shares.deleteSharesOfModels(trx, modelIds);
  const byModel = new Map<string, { ownerId: string; targets: string[] }>();
  for (const share of ended) {
    const entry = byModel.get(share.modelId) ?? { ownerId: share.ownerId, targets: [] };
    entry.targets.push(share.targetUserId);
    byModel.set(share.modelId, entry);
  }
  await events.append(
    trx,
    [...byModel].map(([modelId, { ownerId, targets }]) => ({ type: "share_revoked" as const, userId: ownerId, modelId, audience: targets })),
  );
}
