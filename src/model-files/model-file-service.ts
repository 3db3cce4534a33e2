import type { Knex } from "knex";
import { randomUUID } from "node:crypto";
import type { CreateVoiceModelRequest } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { resolveTargetUser } from "../auth/caller";
import type { Tx } from "../db/transaction";
import { AppError, invalidArgument, accessDenied, modelNotFound } from "../errors";
import { BlobNotFoundError, checkKey, InvalidBlobKeyError } from "../storage/blob-store";
import { readAhead } from "../storage/read-ahead";
import { CorruptObjectError } from "../storage/sealed-format";
import type { ByteRange, SealedObject, SealedStore } from "../storage/sealed-store";
import { assertCanWrite } from "../voice-models/access";
import type { Actor, ChangeLog } from "../voice-models/model-events";
import * as modelRepo from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import * as files from "./model-file-repository";
import type { ModelFileRecord } from "./model-file-repository";

/** A stored file as the caller sees it. */
export interface StoredFile {
  sizeBytes: number;
  sha256: string;
  storedBytes: number;
  compressed: boolean;
  deduplicated: boolean;
}

export interface FileExpectations {
  sha256?: string;
  sizeBytes?: number;
}

export interface ModelFileDeps {
  knex: Knex;
  models: VoiceModelService;
  sealed: SealedStore;
  maxFileBytes: number;
  /** Called after commits that may leave objects in the wrong place (the file mover). */
  kickMover?: () => void;
}

export const INCOMING_PREFIX = "incoming/";
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A declared SHA-256 is 64 lowercase hex digits, else INVALID_ARGUMENT naming sha256. */
function checkSha256(sha256: string): void {
  if (!SHA256_HEX.test(sha256)) throw invalidArgument("sha256", "must be 64 lowercase hex digits");
}

/** Stops a stream that goes past the size limit. */
async function* limited(source: AsyncIterable<Uint8Array>, max: number): AsyncIterable<Uint8Array> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.length;
    if (seen > max) throw invalidArgument("file", `is larger than the limit of ${max} bytes`);
    yield chunk;
  }
}

const fileView = (file: ModelFileRecord, deduplicated: boolean): StoredFile => ({
  sizeBytes: file.sizeBytes,
  sha256: file.sha256,
  storedBytes: file.storedBytes,
  compressed: file.compressed,
  deduplicated,
});

/**
 * Model files: upload, ingest from incoming/, reads. Blob first, row second: every file is sealed
 * under a fresh key before the transaction that refers to it; a refused or failed write deletes
 * its object (and the orphan sweep catches what a crash leaves).
 */
export class ModelFileService {
  constructor(private readonly deps: ModelFileDeps) {}

  get sealed(): SealedStore {
    return this.deps.sealed;
  }

  /**
   * The size and SHA-256 of a model's stored file, for a caller who may read the model (checked
   * by the caller). Not a read of the file: nothing is audited.
   */
  async fileInfo(modelId: string): Promise<{ sizeBytes: number; sha256: string } | undefined> {
    const file = await files.findFileOfModel(this.deps.knex, modelId);
    return file ? { sizeBytes: file.sizeBytes, sha256: file.sha256 } : undefined;
  }

  /** Asks the file mover to bring objects where their rows want them (after a commit). */
  kickMover(): void {
    this.deps.kickMover?.();
  }

  /** Seals a plaintext stream as a new object for (userId, modelId); checks expectations. */
  async store(userId: string, modelId: string, bytes: AsyncIterable<Uint8Array>, expect: FileExpectations = {}): Promise<{ fileId: string; sealed: SealedObject }> {
    if (expect.sha256 !== undefined) checkSha256(expect.sha256);
    const fileId = randomUUID();
    const key = `${userId}/${modelId}/${fileId}`;
    let sealed: SealedObject;
    try {
      sealed = await this.deps.sealed.write(key, limited(bytes, this.deps.maxFileBytes));
    } catch (error) {
      await this.deps.sealed.blobs.delete(key).catch(() => undefined);
      throw error;
    }
    const mismatch =
      expect.sha256 !== undefined && expect.sha256 !== sealed.sha256
        ? invalidArgument("sha256", `the bytes hash to ${sealed.sha256}, not ${expect.sha256}`)
        : expect.sizeBytes !== undefined && expect.sizeBytes !== sealed.size
          ? invalidArgument("sizeBytes", `${sealed.size} bytes arrived, not ${expect.sizeBytes}`)
          : undefined;
    if (mismatch) {
      await this.discard(key);
      throw mismatch;
    }
    return { fileId, sealed };
  }

  /**
   * Inside a transaction holding the owner's lock: points the model at the sealed object, or at
   * the user's existing object with the same bytes (deduplication), and moves reference counts.
   */
  async attach(
    trx: Tx,
    log: ChangeLog,
    model: VoiceModelRecord,
    fileId: string,
    sealed: SealedObject,
  ): Promise<{ model: VoiceModelRecord; file: ModelFileRecord; deduplicated: boolean }> {
    const existing = await files.findByHashForUpdate(trx, model.userId, sealed.sha256);
    const previousId = await modelRepo.fileIdOfModel(trx, model.id);
    const live = model.deletedAt === undefined;
    let file: ModelFileRecord;
    if (existing) {
      file = previousId === existing.id || !live ? existing : await files.addLiveRefs(trx, existing.id, 1);
    } else {
      file = await files.insertFile(trx, fileId, model.userId, sealed);
      if (!live) file = await files.addLiveRefs(trx, file.id, -1);
    }
    if (previousId && previousId !== file.id && live) await files.addLiveRefs(trx, previousId, -1);
    const updated = await files.setModelFile(trx, log, model.id, file);
    return { model: updated, file, deduplicated: existing !== undefined };
  }

  /** After commit: drop our fresh object when the row refers to another, wake the mover. */
  private async settle(sealed: SealedObject, file: ModelFileRecord | undefined) {
    if (!file || file.liveKey !== sealed.key) await this.discard(sealed.key);
    this.deps.kickMover?.();
  }

  private async discard(key: string) {
    // Best effort: the orphan sweep removes it later if this fails.
    await this.deps.sealed.blobs.delete(key).catch(() => undefined);
  }

  /** The live model whose file the caller may upload (replace): the checks of every upload path. */
  async uploadTarget(actor: Actor, modelId: string): Promise<VoiceModelRecord> {
    const id = valid.modelId(modelId);
    const found = await modelRepo.findModel(this.deps.knex, id);
    if (!found || found.deletedAt) throw modelNotFound(id);
    assertCanWrite(actor.caller, found);
    return found;
  }

  /** Checks what an upload declares before any byte arrives (a chunked upload's start). */
  checkDeclared(expect: Required<FileExpectations>): void {
    checkSha256(expect.sha256);
    if (!Number.isSafeInteger(expect.sizeBytes) || expect.sizeBytes < 0) throw invalidArgument("sizeBytes", "must be 0 or more");
    if (expect.sizeBytes > this.deps.maxFileBytes) throw invalidArgument("sizeBytes", `is larger than the limit of ${this.deps.maxFileBytes} bytes`);
  }

  /** Uploads (replaces) the file of a model the caller may change. */
  async upload(actor: Actor, modelId: string, bytes: AsyncIterable<Uint8Array>, expect: FileExpectations = {}): Promise<{ model: VoiceModelRecord; file: StoredFile }> {
    const found = await this.uploadTarget(actor, modelId);
    const id = found.id;
    const { fileId, sealed } = await this.store(found.userId, id, bytes, expect);
    return this.commitSealed(fileId, sealed, (attachTo) =>
      this.deps.models.writeForUser(actor, found.userId, async (trx, log) => {
        const current = await modelRepo.findModelForUpdate(trx, id);
        if (!current || current.deletedAt) throw modelNotFound(id);
        log.cause = "file_stored";
        return attachTo(trx, log, current);
      }),
    );
  }

  /**
   * Commits the rows that point a model at a freshly sealed object (`commit` calls `attachTo`
   * inside its transaction). Whatever the outcome, the object stays only if a committed row
   * refers to it, and the mover is woken.
   */
  private async commitSealed(
    fileId: string,
    sealed: SealedObject,
    commit: (attachTo: (trx: Tx, log: ChangeLog, model: VoiceModelRecord) => Promise<VoiceModelRecord>) => Promise<VoiceModelRecord>,
  ): Promise<{ model: VoiceModelRecord; file: StoredFile }> {
    let attached: { file: ModelFileRecord; deduplicated: boolean } | undefined;
    try {
      const model = await commit(async (trx, log, model) => {
        const done = await this.attach(trx, log, model, fileId, sealed);
        attached = done;
        return done.model;
      });
      return { model, file: fileView(attached!.file, attached!.deduplicated) };
    } catch (error) {
      attached = undefined;
      throw error;
    } finally {
      await this.settle(sealed, attached?.file);
    }
  }

  /**
   * CreateVoiceModel with a modelPath under incoming/: the training service wrote the raw file
   * there. It must lie under incoming/{userId}/ and exist; it is sealed under the new model's
   * folder, the model row is created with it in one transaction, then the source is deleted.
   * Other paths are plain references, created as before.
   */
  async createWithIngest(actor: Actor, req: CreateVoiceModelRequest): Promise<VoiceModelRecord> {
    if (!req.modelPath.startsWith(INCOMING_PREFIX)) return this.deps.models.create(actor, req);
    const userId = resolveTargetUser(actor.caller, req.userId);
    const source = req.modelPath;
    try {
      checkKey(source);
    } catch (error) {
      if (error instanceof InvalidBlobKeyError) throw invalidArgument("modelPath", "is not a valid object path");
      throw error;
    }
    if (!source.startsWith(`${INCOMING_PREFIX}${userId}/`)) {
      throw accessDenied(`modelPath ${source} is not under incoming/${userId}/`, { field: "modelPath", userId });
    }
    if (req.trainingJobId) {
      // A retried create returns the model made the first time (its source is gone by now).
      const existing = await modelRepo.findByTrainingJob(this.deps.knex as unknown as Tx, userId, req.trainingJobId);
      if (existing) return existing;
    }
    let stream;
    try {
      stream = await this.deps.sealed.blobs.get(source);
    } catch (error) {
      if (error instanceof BlobNotFoundError) throw invalidArgument("modelPath", `no object at ${source}`);
      throw error;
    }
    const modelId = randomUUID();
    const { fileId, sealed } = await this.store(userId, modelId, stream);
    let attached: ModelFileRecord | undefined;
    try {
      const model = await this.deps.models.create(
        actor,
        { ...req, userId, modelPath: sealed.key, sizeBytes: BigInt(sealed.size) },
        {
          id: modelId,
          attach: async (trx, log, created) => {
            const done = await this.attach(trx, log, created, fileId, sealed);
            attached = done.file;
            return done.model;
          },
        },
      );
      if (model.id !== modelId) attached = undefined;
      else await this.deps.sealed.blobs.delete(source);
      return model;
    } catch (error) {
      attached = undefined;
      throw error;
    } finally {
      await this.settle(sealed, attached);
    }
  }

  /**
   * Creates a model from a header and a byte stream (import); checks run before any row. A
   * parentModelId is kept only when it names one of the user's models, and dropped otherwise
   * (an export made by another user names theirs), without saying whether it exists.
   */
  async createFromBytes(
    actor: Actor,
    req: CreateVoiceModelRequest,
    bytes: AsyncIterable<Uint8Array>,
    verify: (sealed: SealedObject) => AppError | undefined,
  ): Promise<{ model: VoiceModelRecord; file: StoredFile }> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const modelId = randomUUID();
    const { fileId, sealed } = await this.store(userId, modelId, bytes);
    const refused = verify(sealed);
    if (refused) {
      await this.discard(sealed.key);
      throw refused;
    }
    return this.commitSealed(fileId, sealed, (attachTo) =>
      this.deps.models.create(
        actor,
        { ...req, userId, modelPath: sealed.key, sizeBytes: BigInt(sealed.size), trainingJobId: undefined },
        { id: modelId, attach: attachTo, parentOnlyIfOwn: true },
      ),
    );
  }

  /** A live model the caller may use, with its file. */
  async fileForUse(actor: Actor, modelId: string): Promise<{ model: VoiceModelRecord; file: ModelFileRecord }> {
    const id = valid.modelId(modelId);
    const model = await modelRepo.findModel(this.deps.knex, id);
    if (!model) throw modelNotFound(id);
    await this.deps.models.access.assertCanUse(this.deps.knex, actor.caller, model);
    if (model.deletedAt) throw modelNotFound(id);
    const file = await files.findFileOfModel(this.deps.knex, id);
    if (!file) throw new AppError("MODEL_FILE_MISSING", `voice model ${id} has no stored file`, { modelId: id });
    return { model, file };
  }

  /** A live model the caller may change (export), with its file. */
  async fileForOwner(actor: Actor, modelId: string): Promise<{ model: VoiceModelRecord; file: ModelFileRecord }> {
    const id = valid.modelId(modelId);
    const model = await modelRepo.findModel(this.deps.knex, id);
    if (!model) throw modelNotFound(id);
    assertCanWrite(actor.caller, model);
    if (model.deletedAt) throw modelNotFound(id);
    const file = await files.findFileOfModel(this.deps.knex, id);
    if (!file) throw new AppError("MODEL_FILE_MISSING", `voice model ${id} has no stored file`, { modelId: id });
    return { model, file };
  }

  /**
   * The object of a file that was not at its recorded key: the mover moves the object first and
   * records the new key after, so look where the row now says, or else at the file's other
   * location (live or deleted/) the move is heading to.
   */
  private async relocated(file: ModelFileRecord, range?: ByteRange): Promise<AsyncIterable<Buffer>> {
    const again = await files.findFile(this.deps.knex, file.id);
    if (again) {
      const keys = again.storageKey !== file.storageKey ? [again.storageKey] : [again.liveKey, again.deletedKey].filter((k) => k !== file.storageKey);
      for (const key of keys) {
        try {
          return await this.deps.sealed.read({ ...files.sealedRefOf(again), key }, range);
        } catch (error) {
          if (!(error instanceof BlobNotFoundError)) throw corrupt(error, file);
        }
      }
    }
    throw new AppError("FILE_CORRUPT", `the stored file of ${file.id} is missing`);
  }

  /**
   * The plaintext of a file, or a range of it. Integrity failures become FILE_CORRUPT; an object
   * the mover relocated between our row read and the open is looked up once more.
   */
  async *bytes(file: ModelFileRecord, range?: ByteRange): AsyncIterable<Buffer> {
    let stream: AsyncIterable<Buffer>;
    try {
      stream = await this.deps.sealed.read(files.sealedRefOf(file), range);
    } catch (error) {
      if (!(error instanceof BlobNotFoundError)) throw corrupt(error, file);
      stream = await this.relocated(file, range);
    }
    try {
      yield* readAhead(stream, READ_AHEAD_CHUNKS);
    } catch (error) {
      throw corrupt(error, file);
    }
  }
}

/** Decrypted chunks (1 MiB each) prepared ahead of the one being sent. */
const READ_AHEAD_CHUNKS = 2;

function corrupt(error: unknown, file: ModelFileRecord): unknown {
  if (error instanceof CorruptObjectError) {
    return new AppError("FILE_CORRUPT", `stored file ${file.id} failed its integrity check: ${error.message}`);
  }
  return error;
}
