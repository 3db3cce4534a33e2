import type { Knex } from "knex";
import type { Logger } from "pino";
import { makeCaller } from "../auth/caller";
import type { Tx } from "../db/transaction";
import { modelNotFound } from "../errors";
import type { BlobStore } from "../storage/blob-store";
import { assertCanWrite } from "../voice-models/access";
import type { Actor, ChangeLog } from "../voice-models/model-events";
import * as modelRepo from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import * as files from "./model-file-repository";

const DAY_MS = 86_400_000;

/** Rows of other rooms that hang off a model and go with it when it is purged for good. */
const MODEL_CHILD_TABLES = ["usage_events", "usage_totals", "usage_daily", "model_shares", "cache_voice_models", "cache_voice_stats", "cache_voice_analytics"];

/** Who the background purge acts as (audit events, listeners). */
export const RETENTION_ACTOR: Actor = { caller: makeCaller("system:retention", ["admin"]), requestId: "retention", clientAddress: "internal" };

/** Deletes model rows and everything that refers to them, inside trx; each is logged as "purged". */
export async function deleteModelRows(trx: Tx, log: ChangeLog, modelIds: string[]): Promise<VoiceModelRecord[]> {
  if (modelIds.length === 0) return [];
  for (const table of MODEL_CHILD_TABLES) {
    if (await trx.schema.hasTable(table)) await trx(table).whereIn("model_id", modelIds).delete();
  }
  return modelRepo.deleteModels(trx, log, modelIds);
}

export interface RetentionDeps {
  knex: Knex;
  models: VoiceModelService;
  blobs: BlobStore;
  retentionDays: number;
  orphanGraceMs: number;
  log: Logger;
  kickMover: () => void;
  /** Objects other rooms' rows name (consent recordings): the orphan sweep keeps them. */
  referencedElsewhere?: (key: string) => Promise<boolean>;
}

/**
 * Deleted models: undelete within the retention period, the purge job after it, and the sweeps
 * that remove objects no row needs (files of purged models, orphans of crashed uploads).
 */
export class Retention {
  constructor(private readonly deps: RetentionDeps) {}

  /** Brings a soft-deleted model back (inactive) within the retention period. */
  async undelete(actor: Actor, id: string): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(id);
    const found = await modelRepo.findModel(this.deps.knex, modelId);
    if (!found) throw modelNotFound(modelId);
    assertCanWrite(actor.caller, found);
    const model = await this.deps.models.writeForUser(actor, found.userId, async (trx, log) => {
      const current = await modelRepo.findModelForUpdate(trx, modelId);
      if (!current || !current.deletedAt || current.deletedAt.getTime() < Date.now() - this.deps.retentionDays * DAY_MS) {
        throw modelNotFound(modelId);
      }
      const fileId = await modelRepo.fileIdOfModel(trx, modelId);
      if (fileId) await files.addLiveRefs(trx, fileId, 1);
      log.cause = "undeleted";
      return modelRepo.patchModel(trx, log, modelId, { deletedAt: null, isActive: false });
    });
    this.deps.kickMover();
    return model;
  }

  /**
   * Purges models deleted longer ago than the retention period; returns how many. The purged
   * rows reach the model-change listeners (caches, audit) in the purge's transaction.
   */
  async purgeExpired(batch = 100): Promise<number> {
    const cutoff = new Date(Date.now() - this.deps.retentionDays * DAY_MS);
    let purged = 0;
    for (;;) {
      const ids = await modelRepo.deletedBefore(this.deps.knex, cutoff, batch);
      if (ids.length === 0) break;
      await this.deps.models.write(RETENTION_ACTOR, (trx, log) => deleteModelRows(trx, log, ids));
      purged += ids.length;
    }
    await this.sweepUnreferencedFiles();
    return purged;
  }

  /**
   * File rows no model refers to any more: the row goes first (in a transaction that re-checks
   * it is still unreferenced), then its object; a crash in between leaves an orphan object,
   * which the orphan sweep removes.
   */
  async sweepUnreferencedFiles(): Promise<number> {
    const doomed = await files.deleteUnreferencedFiles(this.deps.knex);
    for (const row of doomed) {
      for (const key of new Set([row.storage_key, row.live_key, row.deleted_key])) await this.deps.blobs.delete(key);
    }
    return doomed.length;
  }

  /**
   * Objects under user folders that no file row names and that are older than the grace period
   * (longer than any upload, so an upload in flight is never touched).
   */
  async sweepOrphans(prefix = ""): Promise<number> {
    const cutoff = Date.now() - this.deps.orphanGraceMs;
    let removed = 0;
    for await (const info of this.deps.blobs.list(prefix)) {
      if (info.key.startsWith("incoming/") || info.key.startsWith("backups/")) continue;
      if (info.updatedAt.getTime() > cutoff) continue;
      if (await files.isReferencedKey(this.deps.knex, info.key)) continue;
      if (await this.deps.referencedElsewhere?.(info.key)) continue;
      await this.deps.blobs.delete(info.key);
      removed++;
    }
    return removed;
  }

  /** One housekeeping round: purge, then sweep; errors are logged, never thrown. */
  async runOnce(): Promise<void> {
    try {
      const purged = await this.purgeExpired();
      const orphans = await this.sweepOrphans();
      if (purged || orphans) this.deps.log.info({ purged, orphans }, "model file retention");
    } catch (error) {
      this.deps.log.error({ err: error }, "model file retention failed");
    }
  }
}
