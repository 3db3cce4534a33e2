import type { Knex } from "knex";
import type { GovernanceConfig } from "../config";
import { activationHistoryHandlers } from "../rpc/activation-history-handlers";
import { backupHandlers } from "../rpc/backup-handlers";
import { batchHandlers } from "../rpc/batch-handlers";
import { consentHandlers } from "../rpc/consent-handlers";
import { eventHandlers } from "../rpc/event-handlers";
import { fileRouteHandlers, type FileRouteHandlers } from "../rpc/file-route-handlers";
import { governanceHandlers } from "../rpc/governance-handlers";
import { modelFileHandlers, withFileInfo, type UsageLookup } from "../rpc/model-file-handlers";
import { uploadSessionHandlers } from "../rpc/upload-session-handlers";
import { usageHandlers } from "../rpc/usage-handlers";
import { voiceModelHandlers, type VoiceModelHandlers } from "../rpc/voice-model-handlers";
import type { Domain } from "./domain";

/** Every RPC's handler, each room's part once, and the file routes' handlers over the served RPCs. */
export function buildHandlers(domain: Domain, options: { knex: Knex; governance: GovernanceConfig; instanceId: string }) {
  const { models, history, consents, files, uploads, retention, backups, erasure, usage, selection, sharing, cleanup, pageTokens, events } = domain;
  // Usage stats as an export header carries them.
  const usageOf: UsageLookup = async (actor, modelId) => {
    const stats = await usage.stats(actor, { modelId } as Parameters<typeof usage.stats>[1]);
    // Keys in a fixed order: the Struct encodes in insertion order, and a cached read of the
    // stats lists them in another, so two exports of the same model would differ in bytes.
    const { modelId: id, usageCount, totalCost, averageLatency } = stats;
    return { modelId: id, usageCount, totalCost, averageLatency, lastUsed: stats.lastUsed?.toISOString() ?? null, qualityRating: stats.qualityRating ?? null };
  };
  const modelHandlers = voiceModelHandlers(models);
  const handlers: VoiceModelHandlers = {
    ...modelHandlers,
    getVoiceModel: withFileInfo(modelHandlers.getVoiceModel, files),
    ...activationHistoryHandlers(history),
    ...batchHandlers(models),
    ...modelFileHandlers(files, retention, usageOf),
    ...uploadSessionHandlers(uploads),
    ...backupHandlers(backups, erasure),
    ...usageHandlers(usage, selection),
    ...eventHandlers(events),
    ...consentHandlers(consents),
    ...governanceHandlers({ knex: options.knex, pageTokens, sharing, cleanup, config: options.governance, instanceId: options.instanceId }),
  };
  /** `served`: the guarded handlers, which uploads and imports over HTTP go through. */
  const fileRoutes = (served: VoiceModelHandlers): FileRouteHandlers => fileRouteHandlers({ files, backups, usageOf, rpc: served });
  return { handlers, fileRoutes };
}
