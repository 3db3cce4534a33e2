import type { Knex } from "knex";
import type { Logger } from "pino";
import { eraseUserFromAudit } from "../audit/audit-log";
import { hasRole } from "../auth/caller";
import type { UserHasher } from "../auth/user-hash";
import { scopes } from "../cache/cache-tables";
import { databaseUnavailable } from "../db/db-errors";
import { applyTransactionSettings, type Tx } from "../db/transaction";
import { accessDenied, invalidArgument } from "../errors";
import * as backups from "../backups/backup-repository";
import * as files from "../model-files/model-file-repository";
import * as uploads from "../model-files/upload-session-repository";
import type { EventOutbox } from "../events/event-outbox";
import { deleteModelRows } from "../model-files/retention";
import { endSharesOfModels } from "../sharing/sharing-service";
import type { BlobStore } from "../storage/blob-store";
import type { Actor } from "../voice-models/model-events";
import { isUserId } from "../auth/user-id";
import * as history from "../voice-models/activation-history";
import * as modelRepo from "../voice-models/repository";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import type { ErasedUsers } from "./erased-users";
import { keyOldErasures } from "./erasure-keys";

/** Top-level folders of the storage layout: a user with one of these ids gets no prefix sweep. */
const RESERVED_FOLDERS = new Set(["incoming", "deleted", "backups"]);

export interface ErasureProgress {
  status: "purging" | "done";
  objectsDeleted: number;
  tombstonedAt: Date;
  finishedAt: Date | undefined;
}

/** Tables of other rooms holding a user's rows outright (deleted in the tombstone's transaction). */
const USER_ROW_TABLES: Array<[table: string, column: string]> = [
  ["model_shares", "target_user_id"],
  ["cache_voice_models", "user_id"],
  ["cache_voice_stats", "user_id"],
  ["cache_voice_analytics", "user_id"],
  ["rate_limit_hits", "user_id"],
  ["voice_model_consents", "user_id"],
  // Sessions they started on another user's model (service or admin callers); their own go with their models.
  ["model_file_uploads", "started_by"],
];

/** Columns where the id may stay as a hash (others' usage events, others' history; the audit log's own pass). */
const HASHED_COLUMNS: Array<[table: string, column: string]> = [
  ["usage_events", "user_id"],
  ["activation_history", "actor_id"],
];

/**
 * DeleteUserData: one transaction removes every row of the user and writes a tombstone (which the
 * database triggers then enforce: no model, file or backup row can be written for them again);
 * then a durable job deletes their objects (files, deleted files, backups, incoming). The
 * tombstone row is the job: a crash midway is resumed by the next start or call.
 */
export class UserErasure {
  constructor(
    private readonly knex: Knex,
    private readonly models: VoiceModelService,
    private readonly blobs: BlobStore,
    private readonly log: Logger,
    private readonly events: EventOutbox,
    private readonly hasher: UserHasher,
    private readonly erased: ErasedUsers,
  ) {}

  /** The keyed hash erasure leaves in place of a user id. */
  readonly userHash = (userId: string): string => this.hasher.hash(userId);

  private prepared: Promise<void> | undefined;

  /**
   * Before the first call is admitted: checks the erasure key against the database, converts
   * erasures hashed before hashes were keyed, and loads the erased users the calls are checked
   * against. Once per process; after a failure (the database unreachable at start) the next
   * caller tries again, its call waiting for it or failing as the database does.
   */
  prepare(): Promise<void> {
    this.prepared ??= (async () => {
      const converted = await keyOldErasures(this.knex, this.hasher);
      if (converted > 0) this.log.info({ converted }, "erasure hashes made before the erasure key converted to keyed hashes");
      await this.erased.reload();
    })().catch((error: unknown) => {
      this.prepared = undefined;
      throw databaseUnavailable(error) ?? error;
    });
    return this.prepared;
  }

  /** Whether the user was erased, once the erased users are loaded (see prepare). */
  readonly isErased = (userId: string): boolean | Promise<boolean> =>
    this.erased.loaded ? this.erased.has(userId) : this.prepare().then(() => this.erased.has(userId));

  /** Tombstones the user (once) and runs the object purge, reporting progress. */
  async *erase(actor: Actor, userId: string | undefined): AsyncIterable<ErasureProgress> {
    if (!hasRole(actor.caller, "admin") && !hasRole(actor.caller, "service")) throw accessDenied("DeleteUserData needs the admin or service role");
    if (!userId || !isUserId(userId)) throw invalidArgument("userId", "is required: the user whose data to delete");
    const hash = this.userHash(userId);
    const existing = await this.knex("user_tombstones").where({ user_hash: hash }).first();
    if (!existing) {
      await this.tombstone(actor, userId, hash);
      // From the commit on, the user's tokens are refused here (others hear it by NOTIFY).
      this.erased.add(hash);
    }
    yield await this.progress(hash);
    for await (const p of this.purgeObjects(hash)) yield p;
  }

  private async tombstone(actor: Actor, userId: string, hash: string): Promise<void> {
    await this.models.writeForUser(actor, userId, async (trx, log) => {
      // Tell the listeners (caches, shares, audit, file references) the live models go, and the
      // change events to forget the user.
      log.erasure = { userId, userHash: hash };
      const live = await modelRepo.liveModels(trx, userId, { forUpdate: true });
      for (const model of live) {
        await modelRepo.patchModel(trx, log, model.id, { isActive: false, deletedAt: new Date() }, "deleted");
        if (model.isActive) log.activationChanged({ userId, fromModelId: model.id, toModelId: undefined, reason: "account_deleted" });
      }
      await trx("user_tombstones").insert({ user_hash: hash, user_id: userId, status: "purging", requested_by_hash: this.userHash(actor.caller.userId) });
      await this.erased.announce(trx, hash);
      await this.recordKeys(trx, userId, hash);
      const all = await modelRepo.userModels(trx, userId, { includeDeleted: true });
      // Before the rows go (and their shares with them): the sharees are told.
      await endSharesOfModels(trx, this.events, all.map((m) => m.id));
      await deleteModelRows(trx, log, all.map((m) => m.id));
      await files.deleteFilesOfUser(trx, userId);
      await backups.deleteBackupsOfUser(trx, userId);
      await history.eraseHistoryOfUser(trx, userId);
      for (const [table, column] of USER_ROW_TABLES) {
        if (await trx.schema.hasTable(table)) await trx(table).where(column, userId).delete();
      }
    });
  }

  private async recordKeys(trx: Tx, userId: string, hash: string) {
    const keys = new Set(await files.storageKeysOfUser(trx, userId));
    for (const key of await backups.storageKeysOfUser(trx, userId)) keys.add(key);
    // Staged chunks of upload sessions (their rows go with the models).
    for (const key of await uploads.stagedKeysOf(trx, { userId })) keys.add(key);
    if (keys.size > 0) await trx("user_purge_keys").insert([...keys].map((k) => ({ user_hash: hash, storage_key: k }))).onConflict().ignore();
  }

  private async progress(hash: string): Promise<ErasureProgress> {
    const t = await this.knex("user_tombstones").where({ user_hash: hash }).first();
    return { status: t.status, objectsDeleted: Number(t.objects_deleted), tombstonedAt: t.created_at, finishedAt: t.finished_at ?? undefined };
  }

  /** Deletes the user's objects, then hashes the id where it remains and forgets it. */
  async *purgeObjects(hash: string): AsyncIterable<ErasureProgress> {
    const t = await this.knex("user_tombstones").where({ user_hash: hash }).first();
    if (!t || t.status === "done") return;
    const userId: string = t.user_id;
    const count = async (n: number) => {
      if (n > 0) await this.knex("user_tombstones").where({ user_hash: hash }).increment("objects_deleted", n);
    };
    const recorded = (await this.knex("user_purge_keys").where({ user_hash: hash }).pluck("storage_key")) as string[];
    for (const key of recorded) {
      await this.blobs.delete(key);
      await this.knex("user_purge_keys").where({ user_hash: hash, storage_key: key }).delete();
      await count(1);
    }
    if (recorded.length > 0) yield await this.progress(hash);
    const prefixes = [`deleted/${userId}/`, `backups/${userId}/`, `incoming/${userId}/`];
    if (!RESERVED_FOLDERS.has(userId)) prefixes.unshift(`${userId}/`);
    for (const prefix of prefixes) {
      let batch = 0;
      for await (const info of this.blobs.list(prefix)) {
        await this.blobs.delete(info.key);
        if (++batch % 100 === 0) {
          await count(100);
          yield await this.progress(hash);
        }
      }
      await count(batch % 100);
    }
    await this.knex.transaction(async (trx) => {
      await applyTransactionSettings(this.knex, trx);
      for (const [table, column] of HASHED_COLUMNS) {
        if (await trx.schema.hasTable(table)) await trx(table).where(column, userId).update({ [column]: hash });
      }
      await eraseUserFromAudit(trx, userId, hash);
      // Rows the tombstone's own transaction wrote again (its cache invalidation) or left.
      for (const [table, column] of USER_ROW_TABLES) {
        if (await trx.schema.hasTable(table)) await trx(table).where(column, userId).delete();
      }
      await trx("cache_generations").where("scope", scopes.user(userId)).delete();
      await modelRepo.forgetOwner(trx, userId);
      await trx("user_tombstones").where({ user_hash: hash }).update({ status: "done", user_id: null, finished_at: trx.raw("now()") });
    });
    yield await this.progress(hash);
  }

  /** Resumes purges a crash interrupted (at start-up and periodically). */
  async resumeAll(): Promise<void> {
    const pending = (await this.knex("user_tombstones").where({ status: "purging" }).pluck("user_hash")) as string[];
    for (const hash of pending) {
      try {
        for await (const _ of this.purgeObjects(hash)) void _;
      } catch (error) {
        this.log.error({ err: error }, "user data purge failed; will retry");
      }
    }
  }
}
