import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { queryAuditEvents } from "../audit/audit-log";
import type { Knex } from "knex";
import type { GovernanceConfig } from "../config";
import type { PageTokens } from "../paging/page-token";
import type { CleanupService, ExpiringModel } from "../cleanup/cleanup-service";
import { alertsFor } from "../metrics/alerts";
import type { ShareRecord } from "../sharing/share-repository";
import type { SharingService } from "../sharing/sharing-service";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

type GovernanceRpc =
  | "shareVoiceModel"
  | "revokeShare"
  | "listSharedVoiceModels"
  | "listModelShares"
  | "cleanupExpiredModels"
  | "listExpiringModels"
  | "listAuditEvents"
  | "getAlerts";

export interface GovernanceDeps {
  knex: Knex;
  /** Mints and opens ListAuditEvents page tokens. */
  pageTokens: PageTokens;
  sharing: SharingService;
  cleanup: CleanupService;
  config: GovernanceConfig;
  /** This instance's id (recorded with manual cleanup runs). */
  instanceId: string;
}

const shareToProto = (s: ShareRecord) => ({
  modelId: s.modelId,
  ownerId: s.ownerId,
  targetUserId: s.targetUserId,
  permission: s.permission,
  sharedAt: timestampFromDate(s.sharedAt),
});

const expiring = (e: ExpiringModel) => ({ model: toProto(e.model), eligibleAt: timestampFromDate(e.eligibleAt), reasons: e.reasons });

/** Sharing, cleanup, audit and alerts: one domain call each. */
export function governanceHandlers(deps: GovernanceDeps): Pick<VoiceModelHandlers, GovernanceRpc> {
  const { sharing, cleanup } = deps;
  return {
    async shareVoiceModel(req, ctx) {
      return { shares: (await sharing.share(ctx, req)).map(shareToProto) };
    },
    async listModelShares(req, ctx) {
      const page = await sharing.listShares(ctx, req);
      return { shares: page.shares.map(shareToProto), nextPageToken: page.nextPageToken };
    },
    async revokeShare(req, ctx) {
      return { revokedCount: await sharing.revoke(ctx, req) };
    },
    async listSharedVoiceModels(req, ctx) {
      const page = await sharing.listShared(ctx, req);
      return {
        sharedModels: page.items.map(({ model, share }) => ({
          model: toProto(model),
          sharedBy: share.ownerId,
          permission: share.permission,
          sharedAt: timestampFromDate(share.sharedAt),
        })),
        nextPageToken: page.nextPageToken,
      };
    },
    async cleanupExpiredModels(req, ctx) {
      const result = await cleanup.cleanup(ctx, { dryRun: req.dryRun, batchSize: req.batchSize }, deps.instanceId);
      return { eligibleCount: result.eligible, cleanedCount: result.cleaned, batches: result.batches, models: result.models.map(expiring) };
    },
    async listExpiringModels(req, ctx) {
      return { models: (await cleanup.listExpiring(ctx, req.userId, req.withinDays)).map(expiring) };
    },
    async listAuditEvents(req, ctx) {
      const page = await queryAuditEvents(deps.knex, deps.pageTokens, ctx.caller, {
        ...req,
        since: req.since ? timestampDate(req.since) : undefined,
        until: req.until ? timestampDate(req.until) : undefined,
      });
      return {
        events: page.events.map((e) => ({
          id: e.id,
          time: timestampFromDate(e.at),
          actorId: e.actorId ?? "",
          actorRoles: e.actorRoles,
          action: e.action,
          targetUserId: e.targetUserId ?? "",
          modelId: e.modelId ?? "",
          resultCode: e.resultCode,
          requestId: e.requestId ?? "",
          clientAddress: e.clientAddress ?? "",
          count: e.count,
          details: e.details as JsonObject,
        })),
        nextPageToken: page.nextPageToken,
      };
    },
    async getAlerts(_req, ctx) {
      const alerts = await alertsFor(deps.knex, ctx.caller, deps.config.alerts);
      return { alerts, evaluatedAt: timestampFromDate(new Date()) };
    },
  };
}
