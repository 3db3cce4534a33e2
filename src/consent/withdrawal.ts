import type { Knex } from "knex";
import type { Logger } from "pino";
import { byActor, recordAudit } from "../audit/audit-log";
import { CACHE_TABLES } from "../cache/cache-tables";
import * as backupRows from "../backups/backup-repository";
import type { BackupService } from "../backups/backup-service";
import type { Tx } from "../db/transaction";
import type { EventOutbox } from "../events/event-outbox";
import * as files from "../model-files/model-file-repository";
import { deleteModelRows } from "../model-files/retention";
import * as uploads from "../model-files/upload-session-repository";
import { endSharesOfModels } from "../sharing/sharing-service";
import type { BlobStore } from "../storage/blob-store";
import * as activation from "../voice-models/activation";
import * as history from "../voice-models/activation-history";
import { isLiveActive, type Actor, type ModelChangeListener } from "../voice-models/model-events";
import * as modelRepo from "../voice-models/repository";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import * as repo from "./consent-repository";
import { consentNotFound } from "./consent-validation";

export interface WithdrawalResult {
  consentId: string;
  deletedModelId: string | undefined;
  activeModelId: string | undefined;
  rewrittenBackupIds: string[];
  deletedBackupIds: string[];
}

export interface WithdrawalDeps {
  knex: Knex;
  models: VoiceModelService;
  blobs: BlobStore;
  events: EventOutbox;
  backups: BackupService;
  log: Logger;
}

/**
 * RevokeConsent: the record, and the model it covers deleted for good, in one transaction (the
 * owner lock held): shares ended (sharees told), the file's reference dropped, history entries
 * naming it erased, its rows and child rows deleted, the next best model made active as on
 * delete, and a tombstone of its id. The listener below then scrubs what the other listeners
 * left naming it. Objects go after commit (a crash leaves orphans the sweep removes).
 */
export class Withdrawal {
  constructor(private readonly deps: WithdrawalDeps) {}

  async withdraw(actor: Actor, userId: string, consentId: string): Promise<WithdrawalResult> {
    const doomedKeys: string[] = [];
    let deletedModelId: string | undefined;
    const activeModelId = await this.deps.models.writeForUser(actor, userId, async (trx, log) => {
      const consent = await repo.findConsent(trx, consentId, { forUpdate: true });
      if (!consent) throw consentNotFound(consentId);
      if (consent.recording) doomedKeys.push(consent.recording.key);
      const covered = await modelRepo.findModelByConsent(trx, consentId);
      const model = covered ? await modelRepo.findModelForUpdate(trx, covered.id) : undefined;
      if (model) {
        deletedModelId = model.id;
        await endSharesOfModels(trx, this.deps.events, [model.id]);
        const fileId = await modelRepo.fileIdOfModel(trx, model.id);
        if (fileId && !model.deletedAt) await files.addLiveRefs(trx, fileId, -1);
        await history.eraseModelFromHistory(trx, model.id);
        // Staged bytes of its upload sessions (the rows go with the model).
        doomedKeys.push(...(await uploads.stagedKeysOf(trx, { modelId: model.id })));
        await deleteModelRows(trx, log, [model.id]);
        if (isLiveActive(model)) await activation.replaceActive(trx, log, model, "model_deleted");
        if (fileId) doomedKeys.push(...(await files.deleteFileIfUnreferenced(trx, fileId)));
        await modelRepo.recordRevoked(trx, model.id);
        // Until the rewrite job has looked, the user's backups are blocked.
        await backupRows.markRewritesOfUser(trx, userId, model.id);
        log.withdraw(model.id);
      }
      await repo.deleteConsent(trx, consentId);
      // In the withdrawal's transaction, naming the owner (an admin may withdraw for them).
      await recordAudit(trx, { ...byActor(actor), action: "consent.revoked", targetUserId: userId, details: { consentId, modelDeleted: model !== undefined } });
      return (await modelRepo.findActiveModel(trx, userId))?.id;
    });
    for (const key of doomedKeys) {
      await this.deps.blobs.delete(key).catch((err) => this.deps.log.warn({ err, key }, "withdrawal: object left for the orphan sweep"));
    }
    // The rewrite runs now; if it fails, the marks stay and the periodic job retries.
    let outcome = { rewritten: [] as string[], deleted: [] as string[] };
    if (deletedModelId) {
      try {
        outcome = await this.deps.backups.rewritePending(userId);
      } catch (err) {
        this.deps.log.warn({ err }, "withdrawal: backup rewrite left for the periodic job");
      }
    }
    return { consentId, deletedModelId, activeModelId, rewrittenBackupIds: outcome.rewritten, deletedBackupIds: outcome.deleted };
  }
}

/**
 * Registered after the audit and cache listeners, before the outbox: every row that still names
 * a withdrawn model outside id columns loses it (event payloads, audit details, cache rows).
 */
export const scrubWithdrawnModels: ModelChangeListener = async (trx, changes, _actor, log) => {
  if (log.withdrawn.size === 0) return;
  const users = new Set(changes.filter((c) => log.withdrawn.has(c.model.id)).map((c) => c.model.userId));
  for (const modelId of log.withdrawn) await scrubModel(trx, modelId);
  for (const userId of users) {
    for (const table of CACHE_TABLES) await trx(table).where({ user_id: userId }).delete();
  }
};

async function scrubModel(trx: Tx, modelId: string): Promise<void> {
  await trx.raw(`UPDATE voice_model_events SET model = NULL WHERE model_id = ? AND model IS NOT NULL`, [modelId]);
  await trx.raw(`UPDATE voice_model_events SET model = model - 'parentModelId' WHERE model->>'parentModelId' = ?`, [modelId]);
  await trx.raw(`UPDATE audit_events SET details = '{"withdrawn": true}'::jsonb WHERE model_id = ? OR details::text LIKE ?`, [modelId, `%${modelId}%`]);
  await trx.raw(`DELETE FROM cache_generations WHERE scope LIKE ?`, [`%${modelId}%`]);
}
