import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { SelectionService } from "../usage/selection";
import type { UsageService, UsageStats } from "../usage/usage-service";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

type UsageRpc =
  | "recordUsage"
  | "recordUsageBatch"
  | "getVoiceModelUsageStats"
  | "getVoiceModelUsageSeries"
  | "getFleetAnalytics"
  | "getVoiceModelAnalytics"
  | "compareVoiceModels"
  | "selectBestVoiceModel";

const statsToProto = (s: UsageStats) => ({
  modelId: s.modelId,
  usageCount: s.usageCount,
  totalCost: s.totalCost,
  averageLatency: s.averageLatency,
  lastUsed: s.lastUsed ? timestampFromDate(s.lastUsed) : undefined,
  qualityRating: s.qualityRating,
});

/** Thin handlers of usage, analytics, comparison and selection. */
export function usageHandlers(usage: UsageService, selection: SelectionService): Pick<VoiceModelHandlers, UsageRpc> {
  return {
    async recordUsage(req, ctx) {
      return usage.record(ctx, req);
    },
    async recordUsageBatch(req, ctx) {
      return usage.recordBatch(ctx, req.events);
    },
    async getVoiceModelUsageStats(req, ctx) {
      return statsToProto(await usage.stats(ctx, req));
    },
    async getVoiceModelUsageSeries(req, ctx) {
      return usage.series(ctx, req);
    },
    async getFleetAnalytics(_req, ctx) {
      const f = await usage.fleet(ctx);
      return {
        totalUsers: f.totalUsers,
        totalModels: f.totalModels,
        activeModels: f.activeModels,
        deletedModels: f.deletedModels,
        modelsByProvider: f.byProvider,
        modelsByStatus: f.byStatus,
        averageQualityScore: f.averageQualityScore,
        totalUsageCount: BigInt(f.usageCount),
        totalCost: f.costSum,
        storedBytes: BigInt(f.storedBytes),
      };
    },
    async getVoiceModelAnalytics(req, ctx) {
      const a = await usage.analytics(ctx, req.userId);
      return { ...a, lastUsed: a.lastUsed ? timestampFromDate(a.lastUsed) : undefined };
    },
    async compareVoiceModels(req, ctx) {
      const { models, recommendation } = await selection.compare(ctx, req);
      return {
        models: models.map((m) => ({ model: toProto(m.model), usage: statsToProto(m.usage), rank: m.rank, note: m.note })),
        recommendation,
      };
    },
    async selectBestVoiceModel(req, ctx) {
      const s = await selection.selectBest(ctx, req);
      return { model: s.model ? toProto(s.model) : undefined, reason: s.reason, others: s.others, activated: s.activated };
    },
  };
}
