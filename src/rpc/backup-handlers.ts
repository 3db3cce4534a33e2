import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { BackupRecord } from "../backups/backup-repository";
import type { BackupService } from "../backups/backup-service";
import type { UserErasure } from "../user-data/user-erasure";
import { messageSized } from "./model-file-handlers";
import type { VoiceModelHandlers } from "./voice-model-handlers";

type BackupRpc = "createBackup" | "listBackups" | "readBackup" | "restoreBackup" | "deleteUserData";

export const backupInfo = (b: BackupRecord) => ({
  backupId: b.id,
  backupPath: b.storageKey,
  sizeBytes: BigInt(b.sizeBytes),
  sha256: b.sha256,
  modelCount: b.modelCount,
  includeDeleted: b.includeDeleted,
  createdAt: timestampFromDate(b.createdAt),
  userId: b.userId,
});

/** Thin handlers of backups (create with streaming progress, list, restore) and account deletion. */
export function backupHandlers(backups: BackupService, erasure: UserErasure): Pick<VoiceModelHandlers, BackupRpc> {
  return {
    async *deleteUserData(req, ctx) {
      for await (const p of erasure.erase(ctx, req.userId)) {
        yield {
          status: p.status,
          objectsDeleted: BigInt(p.objectsDeleted),
          tombstonedAt: timestampFromDate(p.tombstonedAt),
          finishedAt: p.finishedAt ? timestampFromDate(p.finishedAt) : undefined,
        };
      }
    },
    async *createBackup(req, ctx) {
      for await (const event of backups.create(ctx, req.userId, req.includeDeleted, ctx.signal)) {
        if (event.kind === "progress") {
          yield { progress: { modelsDone: event.modelsDone, modelsTotal: event.modelsTotal, bytesWritten: BigInt(event.bytesWritten) } };
        } else {
          yield { backup: backupInfo(event.backup) };
        }
      }
    },
    async listBackups(req, ctx) {
      const page = await backups.list(ctx, req);
      return { backups: page.backups.map(backupInfo), nextPageToken: page.nextPageToken };
    },
    // The same access and checks as GET /v1/backups/{id}, as a stream (browsers read it by connect-web).
    async *readBackup(req, ctx) {
      const backup = await backups.get(ctx, req.backupId);
      const head = { sizeBytes: BigInt(backup.sizeBytes), sha256: backup.sha256 };
      let first = true;
      for await (const chunk of messageSized(backups.bytes(backup))) {
        yield first ? { chunk, ...head } : { chunk };
        first = false;
      }
      if (first) yield head;
    },
    async restoreBackup(req, ctx) {
      return backups.restore(ctx, req);
    },
  };
}
