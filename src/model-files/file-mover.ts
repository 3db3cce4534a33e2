import type { Knex } from "knex";
import type { Logger } from "pino";
import type { Job } from "../jobs/scheduler";
import { BlobNotFoundError, type BlobStore } from "../storage/blob-store";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import * as modelRepo from "../voice-models/repository";
import * as files from "./model-file-repository";

/**
 * Brings objects to where their rows want them, after commit (no blob I/O inside a transaction):
 * a file whose last live model was deleted moves to deleted/{userId}/, and back under
 * {userId}/{modelId}/ when a model refers to it again. The rows are the durable job list, so a
 * crash between a move and its row update is finished by the next pass.
 */
export class FileMover {
  private running: Promise<void> | undefined;
  private again = false;

  constructor(
    private readonly knex: Knex,
    private readonly blobs: BlobStore,
    private readonly log: Logger,
  ) {}

  /** Keeps live reference counts in step with model deletes, in the deleting transaction. */
  listenTo(models: VoiceModelService): void {
    models.onChange(async (trx, changes) => {
      for (const change of changes) {
        if (change.kind !== "deleted") continue;
        const fileId = await modelRepo.fileIdOfModel(trx, change.model.id);
        if (fileId) await files.addLiveRefs(trx, fileId, -1);
      }
      // After commit: a pass that ran now would not see the uncommitted rows.
      if (changes.some((c) => c.kind === "deleted")) {
        trx.executionPromise.then(
          () => this.kick(),
          () => undefined,
        );
      }
    });
  }

  /** Runs a pass soon (coalesced); never throws. */
  kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.runUntilDone()
      .catch((error) => this.log.error({ err: error }, "file mover pass failed"))
      .finally(() => {
        this.running = undefined;
      });
  }

  /** Waits for the current pass (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  /** A pass every intervalMs on every instance, for moves a crash or a failed pass left. */
  job(intervalMs: number): Job {
    return {
      name: "file mover",
      intervalMs,
      mode: { kind: "every-instance" },
      run: async () => {
        this.kick();
        await this.idle();
      },
    };
  }

  private async runUntilDone(): Promise<void> {
    do {
      this.again = false;
      await this.pass();
    } while (this.again);
  }

  /** Moves up to 100 objects; returns how many it moved. */
  async pass(): Promise<number> {
    let moved = 0;
    for (const file of await files.filesToMove(this.knex, 100)) {
      const target = file.location === "live" ? file.liveKey : file.deletedKey;
      try {
        await this.blobs.move(file.storageKey, target);
      } catch (error) {
        // Moved before a crash, row not updated: the object is already at the target.
        if (!(error instanceof BlobNotFoundError) || !(await this.blobs.stat(target))) throw error;
      }
      if (await files.recordMoved(this.knex, file.id, file.location, target)) moved++;
    }
    return moved;
  }
}
