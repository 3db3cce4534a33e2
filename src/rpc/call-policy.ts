import type { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import type { RateLimitedOperation } from "../rate-limit/rate-limiter";
import { BATCH_MAX_ITEMS } from "../voice-models/batch";
import { itemErrors, type ItemError } from "./batch-handlers";

/** An RPC of the service, by its generated local name. */
export type MethodName = keyof typeof VoiceModelService.method;

/** Plain HTTP routes with no RPC of their own (the others are accounted under the RPC they mirror). */
export const FILE_ROUTE_CALLS = ["downloadBackup"] as const;
export type FileRouteName = (typeof FILE_ROUTE_CALLS)[number];

/** Every call the service answers: its RPCs and its route-only file calls. */
export type CallName = MethodName | FileRouteName;

/** What happens around a call besides its handler. */
export interface CallPolicy {
  /** The per-user rate limit the call counts against. */
  readonly rateLimit?: RateLimitedOperation;
  /**
   * The audit event written after the call succeeds, for calls no model-change listener sees:
   * reads of model files and backups (no transaction to join) and the backup calls.
   */
  readonly audit?: string;
  /**
   * A batch call: it takes one rate-limit slot per item (all or none, before any item runs),
   * and each item refused by validation or access gives its slot back and is audited as the
   * single call's refusal would be. Without it a call is one item.
   */
  readonly items?: BatchItems;
}

/** How the call guard counts a batch's items. */
export interface BatchItems {
  /** The rate-limit slots the request takes. */
  slots(request: unknown): number;
  /** Each item of the reply that failed (undefined for one that succeeded). */
  errors(reply: unknown): ReadonlyArray<ItemError | undefined>;
}

/**
 * One slot per item of the list `field` of the request. A list outside 1..100 takes one slot:
 * it is refused INVALID_ARGUMENT (and gives it back), whatever is left of the limit.
 */
const perItem = (field: string): BatchItems => ({
  slots(request) {
    const list = (request as Record<string, unknown> | undefined)?.[field];
    const n = Array.isArray(list) ? list.length : 0;
    return n >= 1 && n <= BATCH_MAX_ITEMS ? n : 1;
  },
  errors: itemErrors,
});

const PLAIN: CallPolicy = {};

/**
 * The one table of per-call policy. A call missing here, or a misspelt name, does not compile;
 * the design document's rate-limited operations are create, update, analytics and backup.
 */
export const CALL_POLICY = {
  createVoiceModel: { rateLimit: "create" },
  getVoiceModel: PLAIN,
  listVoiceModels: PLAIN,
  getVoiceModelLineage: PLAIN,
  updateVoiceModel: { rateLimit: "update" },
  deleteVoiceModel: PLAIN,
  batchGetVoiceModels: { items: perItem("modelIds") },
  batchUpdateVoiceModels: { rateLimit: "update", items: perItem("items") },
  batchDeleteVoiceModels: { items: perItem("modelIds") },
  activateVoiceModel: PLAIN,
  deactivateVoiceModel: PLAIN,
  getActiveVoiceModel: PLAIN,
  whoAmI: PLAIN,
  recordUsage: PLAIN,
  recordUsageBatch: PLAIN,
  getVoiceModelUsageStats: { rateLimit: "analytics" },
  getVoiceModelAnalytics: { rateLimit: "analytics" },
  getVoiceModelUsageSeries: { rateLimit: "analytics" },
  getFleetAnalytics: PLAIN,
  compareVoiceModels: { rateLimit: "analytics" },
  selectBestVoiceModel: PLAIN,
  shareVoiceModel: PLAIN,
  revokeShare: PLAIN,
  listSharedVoiceModels: PLAIN,
  listModelShares: PLAIN,
  cleanupExpiredModels: PLAIN,
  listExpiringModels: PLAIN,
  listAuditEvents: PLAIN,
  getAlerts: PLAIN,
  uploadModelFile: PLAIN,
  // The chunked upload is one upload, limited as UploadModelFile is (not per chunk).
  startModelFileUpload: PLAIN,
  appendModelFileUpload: PLAIN,
  finishModelFileUpload: PLAIN,
  readModelFile: { audit: "file.read" },
  exportVoiceModel: { audit: "model.exported" },
  importVoiceModel: { rateLimit: "create" },
  undeleteVoiceModel: PLAIN,
  createBackup: { rateLimit: "backup", audit: "backup.created" },
  listBackups: PLAIN,
  // The stream form of the downloadBackup route, audited alike.
  readBackup: { audit: "backup.read" },
  restoreBackup: { rateLimit: "backup", audit: "backup.restored" },
  deleteUserData: PLAIN,
  listActivationHistory: PLAIN,
  // A write of the active model, limited like other updates.
  rollbackActiveModel: { rateLimit: "update" },
  watchVoiceModelEvents: PLAIN,
  // Consent records are not model rows: no model-change listener sees them, so the policy audits.
  recordConsent: { rateLimit: "update", audit: "consent.recorded" },
  getConsent: PLAIN,
  listConsents: PLAIN,
  // A withdrawal is never rate limited; it audits itself in its transaction (naming the owner).
  revokeConsent: PLAIN,
  uploadConsentRecording: { rateLimit: "update", audit: "consent.recording_stored" },
  readConsentRecording: { audit: "consent.recording_read" },
  listModelsMissingConsent: PLAIN,
  downloadBackup: { audit: "backup.read" },
} as const satisfies Record<CallName, CallPolicy>;
