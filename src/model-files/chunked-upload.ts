import type { Knex } from "knex";
import { createHash, randomUUID } from "node:crypto";
import { inTransaction, type Db } from "../db/transaction";
import { AppError, invalidArgument } from "../errors";
import { BlobNotFoundError, type BlobStore } from "../storage/blob-store";
import { CorruptObjectError } from "../storage/sealed-format";
import type { Actor } from "../voice-models/model-events";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { ModelFileService, StoredFile } from "./model-file-service";
import * as repo from "./upload-session-repository";
import type { UploadSessionRecord } from "./upload-session-repository";

/**
 * The most bytes one append carries: 1 MiB is about 1.4 MiB of base64 in Connect JSON, well
 * under the 4 MiB message limit, and one sealed chunk of the blob format.
 */
export const UPLOAD_CHUNK_BYTES = 1024 * 1024;

export interface ChunkedUploadDeps {
  knex: Knex;
  files: ModelFileService;
  /** A session with no append for this long is expired (and swept). */
  expiryMs: number;
}

const uploadNotFound = (id: string) => new AppError("UPLOAD_NOT_FOUND", `upload ${id} not found (unknown, expired, finished or not yours)`, { field: "uploadId" });

const offsetMismatch = (offset: number, received: number) =>
  new AppError("UPLOAD_OFFSET_MISMATCH", `offset ${offset} is not where the upload stands: ${received} bytes received; send from offset ${received}`, {
    field: "offset",
    receivedBytes: received,
  });

const sha256Of = (data: Uint8Array) => createHash("sha256").update(data).digest("hex");

/** Deletes sessions' rows, then their staged objects (the orphan sweep catches any left). */
async function dropSessions(knex: Knex, blobs: BlobStore, ids: string[]): Promise<void> {
  const keys = await inTransaction(knex, (trx) => repo.deleteSessions(trx, ids), { settings: false });
  for (const key of keys) await blobs.delete(key).catch(() => undefined);
}

/**
 * The expiry sweep (one instance of the fleet runs it): sessions with no append since `before`
 * go, rows and staged objects. Returns how many.
 */
export async function sweepIdleUploads(deps: { knex: Knex; blobs: BlobStore }, before: Date, batch = 100): Promise<number> {
  let swept = 0;
  for (;;) {
    const ids = await repo.idleSessions(deps.knex, before, batch);
    if (ids.length > 0) await dropSessions(deps.knex, deps.blobs, ids);
    swept += ids.length;
    if (ids.length < batch) return swept;
  }
}

/**
 * Resumable uploads in unary calls: Start, Append (in order, idempotent for a re-sent chunk),
 * Finish, which hands the staged bytes to the same upload as UploadModelFile. Each chunk is
 * sealed as an object of its own before the row that counts it (blob first, row second).
 */
export class ChunkedUploads {
  constructor(private readonly deps: ChunkedUploadDeps) {}

  private get sealed() {
    return this.deps.files.sealed;
  }

  /** Opens a session, or returns the caller's open one for the same model and file (a resume). */
  async start(actor: Actor, req: { modelId: string; sizeBytes: bigint; sha256: string }): Promise<UploadSessionRecord> {
    const model: VoiceModelRecord = await this.deps.files.uploadTarget(actor, req.modelId);
    const sizeBytes = Number(req.sizeBytes);
    this.deps.files.checkDeclared({ sha256: req.sha256, sizeBytes });
    const match = { modelId: model.id, startedBy: actor.caller.userId, sizeBytes, sha256: req.sha256 };
    const open = await repo.findResumable(this.deps.knex, match, this.expiredBefore());
    if (open) {
      await repo.touchSession(this.deps.knex, open.id);
      return open;
    }
    return repo.insertSession(this.deps.knex, { id: randomUUID(), userId: model.userId, chunkBytes: UPLOAD_CHUNK_BYTES, ...match });
  }

  /** Adds the next bytes at `offset`; returns the bytes received so far. */
  async append(actor: Actor, req: { uploadId: string; offset: bigint; data: Uint8Array }): Promise<number> {
    const id = valid.uuid(req.uploadId, "uploadId", "an upload id");
    if (req.offset < 0n || req.offset > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("offset", "must be 0 or more");
    const offset = Number(req.offset);
    const { data } = req;
    const session = await this.session(this.deps.knex, actor, id);
    if (data.length === 0) throw invalidArgument("data", "must hold at least one byte");
    if (data.length > session.chunkBytes) throw invalidArgument("data", `holds ${data.length} bytes, more than chunk_bytes (${session.chunkBytes})`);
    const sha256 = sha256Of(data);
    const replayed = await this.replayed(this.deps.knex, session, offset, data.length, sha256);
    if (replayed !== undefined) return replayed;
    if (offset + data.length > session.sizeBytes) {
      throw invalidArgument("data", `ends at byte ${offset + data.length}, past the declared size of ${session.sizeBytes} bytes`);
    }
    const chunkId = randomUUID();
    // A fresh key per attempt: two racing appends of one offset never write the same object.
    const key = `${session.userId}/uploads/${session.id}/${chunkId}`;
    let added = false;
    try {
      const sealed = await this.sealed.write(key, (async function* () {
        yield data;
      })());
      const outcome = await inTransaction(this.deps.knex, async (trx) => {
        const current = await this.session(trx, actor, id, { forUpdate: true });
        const again = await this.replayed(trx, current, offset, data.length, sha256);
        if (again !== undefined) return { received: again, added: false };
        return { received: await repo.addChunk(trx, id, chunkId, offset, sealed), added: true };
      }, { settings: false, deadlineMs: actor.deadlineMs });
      added = outcome.added;
      return outcome.received;
    } finally {
      // Refused, lost a race or failed: the object goes (else the orphan sweep takes it).
      if (!added) await this.sealed.blobs.delete(key).catch(() => undefined);
    }
  }

  /** Stores the staged bytes as the model's file (as UploadModelFile) and ends the session. */
  async finish(actor: Actor, uploadId: string): Promise<{ model: VoiceModelRecord; file: StoredFile }> {
    const id = valid.uuid(uploadId, "uploadId", "an upload id");
    const session = await this.session(this.deps.knex, actor, id);
    if (session.receivedBytes < session.sizeBytes) {
      throw new AppError("UPLOAD_INCOMPLETE", `upload ${id} has ${session.receivedBytes} of its ${session.sizeBytes} bytes; append the rest first`, {
        field: "uploadId",
        receivedBytes: session.receivedBytes,
      });
    }
    const chunks = await repo.chunksOf(this.deps.knex, id);
    const sealed = this.sealed;
    const knex = this.deps.knex;
    const staged = (async function* () {
      for (const chunk of chunks) {
        try {
          yield* await sealed.read(chunk.ref);
        } catch (error) {
          // A racing Finish of the same session took it (and its objects) first.
          if (error instanceof BlobNotFoundError && !(await repo.findSession(knex, id))) throw uploadNotFound(id);
          if (error instanceof CorruptObjectError) throw new AppError("FILE_CORRUPT", `a staged chunk of upload ${id} failed its integrity check: ${error.message}`);
          throw error;
        }
      }
    })();
    let stored;
    try {
      stored = await this.deps.files.upload(actor, session.modelId, staged, { sha256: session.sha256, sizeBytes: session.sizeBytes });
    } catch (error) {
      // Bytes that are not the declared file never will be: the session ends (start again).
      // Anything else (model deleted, storage down) keeps it for a retry.
      if (error instanceof AppError && error.code === "INVALID_ARGUMENT" && (error.subject.field === "sha256" || error.subject.field === "sizeBytes")) {
        await dropSessions(knex, sealed.blobs, [id]);
      }
      throw error;
    }
    await dropSessions(knex, sealed.blobs, [id]);
    return stored;
  }

  /** The periodic sweep of sessions idle past the expiry, as of `now`. */
  sweepExpired(now = new Date()): Promise<number> {
    return sweepIdleUploads({ knex: this.deps.knex, blobs: this.sealed.blobs }, this.expiredBefore(now));
  }

  private expiredBefore(now = new Date()): Date {
    return new Date(now.getTime() - this.deps.expiryMs);
  }

  /** A session the caller may continue: theirs (any, for service and admin), not expired. */
  private async session(db: Db, actor: Actor, id: string, options: { forUpdate?: boolean } = {}): Promise<UploadSessionRecord> {
    const session = await repo.findSession(db, id, options);
    if (!session || session.updatedAt < this.expiredBefore()) throw uploadNotFound(id);
    if (!actor.caller.privileged && session.startedBy !== actor.caller.userId) throw uploadNotFound(id);
    return session;
  }

  /**
   * For an append not at the received count: the bytes received so far when it re-sends a chunk
   * already received (same offset, length and bytes: a retry after a lost reply), else the
   * mismatch error naming where to resume. Undefined for an append at the received count.
   */
  private async replayed(db: Db, session: UploadSessionRecord, offset: number, length: number, sha256: string): Promise<number | undefined> {
    const received = session.receivedBytes;
    if (offset === received) return undefined;
    if (offset < received && offset + length <= received) {
      const chunk = await repo.chunkAt(db, session.id, offset);
      if (chunk && chunk.sizeBytes === length && chunk.sha256 === sha256) return received;
    }
    throw offsetMismatch(offset, received);
  }
}
