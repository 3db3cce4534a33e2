import type { Knex } from "knex";
import { randomUUID } from "node:crypto";
import { resolveTargetUser } from "../auth/caller";
import { inTransaction, type Tx } from "../db/transaction";
import { accessDenied, AppError, invalidArgument } from "../errors";
import * as files from "../model-files/model-file-repository";
import type { ModelFileRecord } from "../model-files/model-file-repository";
import type { ModelFileService } from "../model-files/model-file-service";
import { TIME_MS, type PageTokens, type PositionField } from "../paging/page-token";
import { checkKey, InvalidBlobKeyError } from "../storage/blob-store";
import { CorruptObjectError } from "../storage/sealed-format";
import type { SealedObject } from "../storage/sealed-store";
import * as activation from "../voice-models/activation";
import { isLiveActive, type Actor, type ChangeLog } from "../voice-models/model-events";
import { rankModels } from "../voice-models/ranking";
import * as modelRepo from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { Provider, Status } from "../voice-models/constants";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import {
  BACKUP_FORMAT,
  BACKUP_MAGIC,
  BadBackupError,
  manifestModel,
  manifestPrefix,
  MAX_MANIFEST_BYTES,
  parseManifest,
  type Manifest,
  type ManifestFile,
  type ManifestModel,
} from "./backup-format";
import * as repo from "./backup-repository";
import type { BackupRecord } from "./backup-repository";

export type BackupEvent =
  | { kind: "progress"; modelsDone: number; modelsTotal: number; bytesWritten: number }
  | { kind: "done"; backup: BackupRecord };

export interface RestoreResult {
  restored: number;
  skipped: number;
  overwritten: number;
  activeModelId: string | undefined;
}

export interface BackupDeps {
  knex: Knex;
  models: VoiceModelService;
  files: ModelFileService;
  /** Prefixes a client may put before a backup path (e.g. "gs://bucket/prefix/"). */
  pathPrefixes: string[];
  pageTokens: PageTokens;
}

const CURSOR: readonly PositionField[] = [TIME_MS, { kind: "uuid" }];

class ReplanRestore extends Error {}

const backupNotFound = (what: string) => new AppError("BACKUP_NOT_FOUND", `backup ${what} not found`);

/** A backup that may hold a withdrawn model: neither downloaded nor restored until rewritten. */
async function assertNoRewritePending(db: Knex, backup: BackupRecord): Promise<void> {
  if (await repo.rewritePending(db, backup.id)) {
    throw new AppError(
      "BACKUP_REWRITE_PENDING",
      `backup ${backup.id} may hold a model whose consent was withdrawn and is being rewritten without it; retry shortly`,
      { field: "backupId" },
    );
  }
}

/** What the rewrite job did to the backups it looked at. */
export interface RewriteOutcome {
  rewritten: string[];
  deleted: string[];
}

const UUID_IN_KEY = /^backups\/[^/]+\/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})[./]/;

async function readAll(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of stream) parts.push(Buffer.from(p));
  return Buffer.concat(parts);
}

/** Backups of a user's models and files, and all-or-nothing restores from them. */
export class BackupService {
  constructor(private readonly deps: BackupDeps) {}

  private get sealed() {
    return this.deps.files.sealed;
  }

  /** Writes a backup, yielding progress, then the stored backup. Blob first, row second. */
  async *create(actor: Actor, requestedUserId: string | undefined, includeDeleted: boolean, signal?: AbortSignal): AsyncIterable<BackupEvent> {
    const userId = resolveTargetUser(actor.caller, requestedUserId);
    const models = await modelRepo.userModels(this.deps.knex, userId, { includeDeleted });
    const fileRows = new Map<string, ModelFileRecord>();
    const manifestModels: ManifestModel[] = [];
    const placed = new Map<string, ManifestFile>();
    let offset = 0;
    for (const model of models) {
      const file = await files.findFileOfModel(this.deps.knex, model.id);
      let entry: ManifestFile | null = null;
      if (file) {
        entry = placed.get(file.id) ?? null;
        if (!entry) {
          entry = { sha256: file.sha256, sizeBytes: file.sizeBytes, offset };
          offset += file.sizeBytes;
          placed.set(file.id, entry);
          fileRows.set(file.id, file);
        }
      }
      manifestModels.push(manifestModel(model, entry));
    }
    const manifest: Manifest = { format: BACKUP_FORMAT, userId, createdAt: new Date().toISOString(), models: manifestModels };
    const backupId = randomUUID();
    const key = `backups/${userId}/${backupId}.vmb`;

    const events: BackupEvent[] = [];
    let wake: (() => void) | undefined;
    const push = (e: BackupEvent) => {
      events.push(e);
      wake?.();
    };
    const self = this;
    async function* plaintext(): AsyncIterable<Uint8Array> {
      const prefix = manifestPrefix(manifest);
      let written = prefix.length;
      yield prefix;
      let done = 0;
      for (const [, file] of fileRows) {
        for await (const chunk of self.deps.files.bytes(file)) {
          if (signal?.aborted) throw new AppError("INVALID_ARGUMENT", "the backup was cancelled");
          written += chunk.length;
          yield chunk;
        }
        done++;
        push({ kind: "progress", modelsDone: done, modelsTotal: models.length, bytesWritten: written });
      }
      push({ kind: "progress", modelsDone: models.length, modelsTotal: models.length, bytesWritten: written });
    }
    let finished = false;
    let failure: unknown;
    let result: SealedObject | undefined;
    void this.sealed.write(key, plaintext(), { compression: "never" }).then(
      (r) => {
        result = r;
        finished = true;
        wake?.();
      },
      (e) => {
        failure = e;
        finished = true;
        wake?.();
      },
    );
    push({ kind: "progress", modelsDone: 0, modelsTotal: models.length, bytesWritten: 0 });
    while (!finished || events.length > 0) {
      if (events.length > 0) {
        yield events.shift()!;
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
    if (failure || !result) {
      await this.sealed.blobs.delete(key).catch(() => undefined);
      throw failure;
    }
    try {
      // In a transaction of ours: it hands the erasure key to the trigger that checks the user.
      const sealed = result;
      const backup = await inTransaction(this.deps.knex, (trx) => repo.insertBackup(trx, backupId, userId, sealed, models.length, includeDeleted));
      // A withdrawal that committed while this backup was written: the rewrite job takes it.
      const withdrawn = await modelRepo.revokedAmong(this.deps.knex, models.map((m) => m.id));
      if (withdrawn.size > 0) {
        await repo.markRewrite(this.deps.knex, backup.id, [...withdrawn]);
        await this.rewritePending(userId);
      }
      yield { kind: "done", backup };
    } catch (error) {
      await this.sealed.blobs.delete(key).catch(() => undefined);
      throw error;
    }
  }

  async list(actor: Actor, req: { userId?: string; limit?: number; pageToken?: string }): Promise<{ backups: BackupRecord[]; nextPageToken: string }> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const limit = valid.pageLimit(req.limit);
    // A token opens only for the caller and the user whose list it pages.
    const scope = { callerId: actor.caller.userId, filters: { userId } };
    let after: { createdAtMs: number; id: string } | undefined;
    if (req.pageToken) {
      const [createdAtMs, id] = this.deps.pageTokens.open("ListBackups", scope, CURSOR, req.pageToken);
      after = { createdAtMs: createdAtMs as number, id: id as string };
    }
    const backups = await repo.listBackups(this.deps.knex, userId, limit, after);
    const last = backups[backups.length - 1];
    const nextPageToken = backups.length === limit ? this.deps.pageTokens.mint("ListBackups", scope, CURSOR, [last.createdAt.getTime(), last.id]) : "";
    return { backups, nextPageToken };
  }

  /** A backup the caller may read (its owner, service and admin). */
  async get(actor: Actor, backupId: string): Promise<BackupRecord> {
    backupId = valid.backupId(backupId);
    const backup = await repo.findBackup(this.deps.knex, backupId);
    if (!backup) throw backupNotFound(backupId);
    if (!actor.caller.privileged && backup.userId !== actor.caller.userId) throw accessDenied(`backup ${backupId} belongs to another user`);
    await assertNoRewritePending(this.deps.knex, backup);
    return backup;
  }

  /** The plaintext of a backup, or a range of it. */
  async *bytes(backup: BackupRecord, range?: { start: number; end: number }): AsyncIterable<Buffer> {
    try {
      yield* await this.sealed.read(repo.sealedRefOfBackup(backup), range);
    } catch (error) {
      if (error instanceof CorruptObjectError) throw new AppError("FILE_CORRUPT", `backup ${backup.id} failed its integrity check: ${error.message}`);
      throw error;
    }
  }

  /**
   * The rewrite job: every backup marked by a withdrawal (optionally one user's) is rewritten
   * without the withdrawn models (a new object under a fresh key, the row swapped in one
   * transaction), deleted when it held nothing else, or unmarked when it held none of them; then
   * the old objects are deleted. A failure leaves the marks (the backup stays blocked) for the
   * next run.
   */
  async rewritePending(userId?: string): Promise<RewriteOutcome> {
    const outcome: RewriteOutcome = { rewritten: [], deleted: [] };
    for (const [backupId, modelIds] of await repo.pendingRewrites(this.deps.knex, userId)) {
      const done = await this.rewriteOne(backupId, modelIds);
      if (done === "rewritten" || done === "deleted") outcome[done].push(backupId);
    }
    await this.purgeOldObjects();
    return outcome;
  }

  private async rewriteOne(backupId: string, modelIds: string[]): Promise<"rewritten" | "deleted" | "unchanged" | "gone"> {
    const backup = await repo.findBackup(this.deps.knex, backupId);
    if (!backup) return "gone";
    const manifest = await this.readManifest(backup);
    const withdrawn = new Set(modelIds);
    const keep = manifest.models.filter((m) => !withdrawn.has(m.id));
    if (keep.length === manifest.models.length) {
      await repo.clearRewrites(this.deps.knex, backupId, modelIds);
      return "unchanged";
    }
    if (keep.length === 0) {
      await inTransaction(this.deps.knex, (trx) => repo.deleteBackup(trx, backupId, backup.storageKey));
      return "deleted";
    }
    // The kept models' files, each once, at new offsets.
    const dataStart = BACKUP_MAGIC.length + 4 + (await this.manifestLength(backup));
    const placed = new Map<string, ManifestFile>();
    const ranges: Array<{ start: number; size: number }> = [];
    let offset = 0;
    const models = keep.map((kept) => {
      // A parent that was withdrawn is gone, as the purge unlinks it.
      const m = kept.parentModelId && withdrawn.has(kept.parentModelId) ? { ...kept, parentModelId: null } : kept;
      if (!m.file) return m;
      let entry = placed.get(m.file.sha256);
      if (!entry) {
        entry = { sha256: m.file.sha256, sizeBytes: m.file.sizeBytes, offset };
        ranges.push({ start: dataStart + m.file.offset, size: m.file.sizeBytes });
        offset += m.file.sizeBytes;
        placed.set(m.file.sha256, entry);
      }
      return { ...m, file: entry };
    });
    const self = this;
    async function* plaintext(): AsyncIterable<Uint8Array> {
      yield manifestPrefix({ ...manifest, models });
      for (const r of ranges) if (r.size > 0) yield* self.bytes(backup!, { start: r.start, end: r.start + r.size - 1 });
    }
    const key = `backups/${backup.userId}/${backupId}.${randomUUID()}.vmb`;
    let sealed: SealedObject;
    try {
      sealed = await this.sealed.write(key, plaintext(), { compression: "never" });
    } catch (error) {
      await this.discard([key]);
      throw error;
    }
    const swapped = await inTransaction(this.deps.knex, async (trx) => {
      const current = await repo.findBackupForUpdate(trx, backupId);
      if (!current || current.storageKey !== backup.storageKey) return false;
      await repo.swapObject(trx, backupId, sealed, models.length, backup.storageKey, modelIds);
      return true;
    }).catch(async (error) => {
      await this.discard([key]);
      throw error;
    });
    if (!swapped) {
      await this.discard([key]);
      return "gone";
    }
    return "rewritten";
  }

  /** Objects that rewritten or deleted backups left behind (the durable list in backup_purge_keys). */
  async purgeOldObjects(): Promise<void> {
    for (const key of await repo.purgeKeys(this.deps.knex)) {
      await this.sealed.blobs.delete(key);
      await repo.forgetPurgeKey(this.deps.knex, key);
    }
  }

  /** The key a client's backup path names, refused unless under backups/{userId}/. */
  private backupKey(path: string, userId: string): string {
    let key = path.trim();
    for (const prefix of this.deps.pathPrefixes) if (prefix && key.startsWith(prefix)) key = key.slice(prefix.length);
    try {
      checkKey(key);
    } catch (error) {
      if (error instanceof InvalidBlobKeyError) throw invalidArgument("backupPath", "is not a valid backup path");
      throw error;
    }
    if (!key.startsWith(`backups/${userId}/`)) throw accessDenied(`backupPath must lie under backups/${userId}/`, { field: "backupPath", userId });
    return key;
  }

  async restore(
    actor: Actor,
    req: { backupPath: string; overwriteExisting: boolean; activateRestored: boolean; userId?: string },
  ): Promise<RestoreResult> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const key = this.backupKey(req.backupPath, userId);
    // A rewritten backup has a new key: its first path still names it by its id.
    const byId = UUID_IN_KEY.exec(key)?.[1];
    const backup = (await repo.findBackupByKey(this.deps.knex, key)) ?? (byId ? await repo.findBackup(this.deps.knex, byId) : undefined);
    if (!backup || backup.userId !== userId) throw backupNotFound(req.backupPath);
    await assertNoRewritePending(this.deps.knex, backup);
    const manifest = await this.readManifest(backup);
    // A file row the plan counted on can be purged before the transaction: plan again.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.restoreOnce(actor, userId, backup, manifest, req);
      } catch (error) {
        if (!(error instanceof ReplanRestore) || attempt >= 3) throw error instanceof ReplanRestore ? new AppError("SERVICE_UNAVAILABLE", "the restore raced with file clean-up; retry") : error;
      }
    }
  }

  private async restoreOnce(
    actor: Actor,
    userId: string,
    backup: BackupRecord,
    manifest: Manifest,
    req: { overwriteExisting: boolean; activateRestored: boolean },
  ): Promise<RestoreResult> {
    // Blob phase: every file the restore may need is sealed under a fresh key before the
    // transaction; nothing a reader can see changes until it commits.
    const written = new Map<string, { fileId: string; sealed: SealedObject }>();
    const dataStart = BACKUP_MAGIC.length + 4 + (await this.manifestLength(backup));
    const withdrawn = await modelRepo.revokedAmong(this.deps.knex, manifest.models.map((m) => m.id));
    try {
      for (const m of manifest.models) {
        if (!m.file || written.has(m.file.sha256) || withdrawn.has(m.id)) continue;
        const existing = await files.findByHash(this.deps.knex, userId, m.file.sha256);
        if (existing) continue;
        const f = m.file;
        const source = f.sizeBytes === 0 ? (async function* () {})() : this.bytes(backup, { start: dataStart + f.offset, end: dataStart + f.offset + f.sizeBytes - 1 });
        try {
          written.set(f.sha256, await this.deps.files.store(userId, m.id, source, { sha256: f.sha256, sizeBytes: f.sizeBytes }));
        } catch (error) {
          if (error instanceof AppError && error.code === "INVALID_ARGUMENT") throw new AppError("FILE_CORRUPT", `backup ${backup.id}: the file of model ${m.id} does not match its checksum`);
          throw error;
        }
      }
    } catch (error) {
      await this.discard([...written.values()].map((w) => w.sealed.key));
      throw error;
    }

    const used = new Set<string>();
    try {
      const result = await this.deps.models.writeForUser(actor, userId, (trx, log) => this.restoreRows(trx, log, userId, manifest, req, written, used));
      await this.discard([...written.values()].filter((w) => !used.has(w.sealed.key)).map((w) => w.sealed.key));
      this.deps.files.kickMover();
      return result;
    } catch (error) {
      await this.discard([...written.values()].map((w) => w.sealed.key));
      throw error;
    }
  }

  private async discard(keys: string[]) {
    for (const key of keys) await this.sealed.blobs.delete(key).catch(() => undefined);
  }

  private async manifestLength(backup: BackupRecord): Promise<number> {
    const head = await readAll(this.bytes(backup, { start: 0, end: 7 }));
    if (head.length < 8 || !head.subarray(0, 4).equals(BACKUP_MAGIC)) throw new AppError("FILE_CORRUPT", `backup ${backup.id} is not a backup`);
    const length = head.readUInt32BE(4);
    if (length > MAX_MANIFEST_BYTES) throw new AppError("FILE_CORRUPT", `backup ${backup.id} has a bad manifest`);
    return length;
  }

  private async readManifest(backup: BackupRecord): Promise<Manifest> {
    const length = await this.manifestLength(backup);
    const json = await readAll(this.bytes(backup, { start: 8, end: 8 + length - 1 }));
    try {
      return parseManifest(json, backup.userId);
    } catch (error) {
      if (error instanceof BadBackupError) throw new AppError("FILE_CORRUPT", `backup ${backup.id}: ${error.message}`);
      throw error;
    }
  }

  /**
   * The parent a restored model gets: the backup's, when it is one of the user's models (or is
   * restored later in this restore: linked then); else none. An older backup names no parent
   * (undefined: an overwritten model keeps its own).
   */
  private async restoredParent(
    m: ManifestModel,
    isOwn: (modelId: string) => Promise<boolean>,
    inBackup: ReadonlySet<string>,
    laterParents: Array<{ modelId: string; parentModelId: string }>,
  ): Promise<string | null | undefined> {
    const parent = m.parentModelId;
    if (parent === undefined || parent === null) return parent;
    if (!valid.isUuid(parent) || parent === m.id) return null;
    if (await isOwn(parent)) return parent;
    if (inBackup.has(parent)) laterParents.push({ modelId: m.id, parentModelId: parent });
    return null;
  }

  /** The transaction of a restore: every row change of it commits together or not at all. */
  private async restoreRows(
    trx: Tx,
    log: ChangeLog,
    userId: string,
    manifest: Manifest,
    req: { overwriteExisting: boolean; activateRestored: boolean },
    written: Map<string, { fileId: string; sealed: SealedObject }>,
    used: Set<string>,
  ): Promise<RestoreResult> {
    log.cause = "restored";
    let restored = 0;
    let skipped = 0;
    let overwritten = 0;
    const touched: VoiceModelRecord[] = [];
    const inBackup = new Set(manifest.models.map((m) => m.id));
    // Restored models whose parent is restored later in the loop: linked once it is there.
    const laterParents: Array<{ modelId: string; parentModelId: string }> = [];
    const isOwn = async (modelId: string) => (await modelRepo.findModelForShare(trx, modelId))?.userId === userId;
    // A model whose consent was withdrawn never comes back.
    const withdrawn = await modelRepo.revokedAmong(trx, manifest.models.map((m) => m.id));
    for (const m of manifest.models) {
      if (withdrawn.has(m.id)) {
        skipped++;
        continue;
      }
      const current = await modelRepo.findModelForUpdate(trx, m.id);
      if (current && (current.userId !== userId || !req.overwriteExisting)) {
        skipped++;
        continue;
      }
      const deletedAt = m.deletedAt ? new Date(m.deletedAt) : null;
      const keepActive = !!current && current.isActive && m.status === "completed" && !deletedAt;
      // Backups are sealed objects this service wrote: their values are taken as they were stored.
      const fields = {
        provider: m.provider as Provider,
        modelPath: m.modelPath,
        sampleRate: m.sampleRate,
        qualityScore: m.qualityScore,
        qualityComponents: m.qualityComponents ?? null,
        metadata: m.metadata,
        status: m.status as Status,
        deletedAt,
        isActive: keepActive && !req.activateRestored,
        parentModelId: await this.restoredParent(m, isOwn, inBackup, laterParents),
      } satisfies modelRepo.ModelPatch;
      let model: VoiceModelRecord;
      if (current) {
        const previous = await modelRepo.fileIdOfModel(trx, current.id);
        if (previous && !current.deletedAt) await files.addLiveRefs(trx, previous, -1);
        // The backup's file, if any, is attached below.
        model = await modelRepo.patchModel(trx, log, current.id, { ...fields, fileId: null });
        if (isLiveActive(current) && !isLiveActive(model)) {
          log.add("deactivated", model);
          log.activationChanged({ userId, fromModelId: current.id, toModelId: undefined, reason: "restored" });
        }
        overwritten++;
      } else {
        model = await modelRepo.insertModel(trx, log, {
          ...fields,
          id: m.id,
          userId,
          trainingJobId: m.trainingJobId,
          createdAt: new Date(m.createdAt),
          modelNumber: await keptNumber(trx, userId, m.modelNumber),
        });
        restored++;
      }
      if (m.file) {
        const fresh = written.get(m.file.sha256);
        const existing = await files.findByHashForUpdate(trx, userId, m.file.sha256);
        if (existing) {
          if (!model.deletedAt) await files.addLiveRefs(trx, existing.id, 1);
          await files.setModelFile(trx, log, model.id, existing);
        } else if (fresh) {
          await this.deps.files.attach(trx, log, model, fresh.fileId, fresh.sealed);
          used.add(fresh.sealed.key);
        } else {
          throw new ReplanRestore();
        }
      }
      touched.push((await modelRepo.findModel(trx, model.id))!);
    }
    for (const link of laterParents) {
      if (await isOwn(link.parentModelId)) await modelRepo.patchModel(trx, log, link.modelId, { parentModelId: link.parentModelId });
    }
    if (req.activateRestored) {
      // The best restored model by the one ranking (no criteria), made active by the activation rule.
      const best = rankModels(touched.map((model) => ({ model, averageLatency: undefined })), {}).ranked[0]?.model;
      if (best && !best.isActive) await activation.makeActive(trx, log, best, "restored");
    }
    const active = await modelRepo.findActiveModel(trx, userId);
    return { restored, skipped, overwritten, activeModelId: active?.id };
  }
}

/**
 * The number a re-created model keeps: the backup's, unless another of the user's models has it
 * (numbers are never reused, so only a foreign or damaged backup could); else the next one.
 */
async function keptNumber(trx: Tx, userId: string, modelNumber: number | undefined): Promise<number | undefined> {
  if (modelNumber === undefined || !Number.isSafeInteger(modelNumber) || modelNumber < 1 || modelNumber > 2 ** 31 - 1) return undefined;
  return (await modelRepo.modelNumberTaken(trx, userId, modelNumber)) ? undefined : modelNumber;
}
