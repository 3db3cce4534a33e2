import type { Knex } from "knex";
import { randomUUID } from "node:crypto";
import type { ListConsentsRequest, ListModelsMissingConsentRequest, RecordConsentRequest } from "../../gen/voicemodel/v1/consent_pb";
import { hasRole, resolveTargetUser, type Caller } from "../auth/caller";
import { inTransaction } from "../db/transaction";
import { accessDenied, AppError, invalidArgument } from "../errors";
import type { PageTokens, PositionField } from "../paging/page-token";
import { TIME_MS } from "../paging/page-token";
import type { SealedStore } from "../storage/sealed-store";
import { assertCanWrite } from "../voice-models/access";
import type { Actor } from "../voice-models/model-events";
import * as modelRepo from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import * as repo from "./consent-repository";
import type { ConsentRecord } from "./consent-repository";
import { consentInput, consentNotFound, sha256 } from "./consent-validation";
import type { Withdrawal, WithdrawalResult } from "./withdrawal";

/** A record with the model it covers (read from the model rows). */
export interface ConsentView extends ConsentRecord {
  modelId: string | undefined;
}

const CURSOR: readonly PositionField[] = [TIME_MS, { kind: "uuid" }];


/** Owner and admins read consent records; a service caller may only write them. */
function assertCanReadConsent(caller: Caller, consent: ConsentRecord): void {
  if (caller.userId === consent.userId || hasRole(caller, "admin")) return;
  throw accessDenied(`caller may not read consent record ${consent.id}`, { field: "consentId", userId: consent.userId });
}

/** Owner, service and admins write them (the training service records consent). */
function assertCanWriteConsent(caller: Caller, consent: ConsentRecord): void {
  if (caller.userId === consent.userId || caller.privileged) return;
  throw accessDenied(`caller may not change consent record ${consent.id}`, { field: "consentId", userId: consent.userId });
}

/** Stops a stream that goes past the size limit. */
async function* limited(source: AsyncIterable<Uint8Array>, max: number): AsyncIterable<Uint8Array> {
  let seen = 0;
  for await (const chunk of source) {
    seen += chunk.length;
    if (seen > max) throw invalidArgument("chunk", `the recording is larger than the limit of ${max} bytes`);
    yield chunk;
  }
}

export interface ConsentDeps {
  knex: Knex;
  models: VoiceModelService;
  sealed: SealedStore;
  pageTokens: PageTokens;
  maxRecordingBytes: number;
  withdrawal: Withdrawal;
}

/**
 * Consent records: who agreed to their voice being cloned, to what, how and when; the recording;
 * the provenance of the training samples; and withdrawal (see withdrawal.ts).
 */
export class ConsentService {
  constructor(private readonly deps: ConsentDeps) {}

  private async view(consent: ConsentRecord): Promise<ConsentView> {
    return { ...consent, modelId: (await modelRepo.findModelByConsent(this.deps.knex, consent.id))?.id };
  }

  /**
   * RecordConsent: under the owner lock (so a create by the same training job waits for it), the
   * record, attached to its model when that exists. A record for a training job that has one
   * already is returned as it is.
   */
  async record(actor: Actor, req: RecordConsentRequest): Promise<ConsentView> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const input = consentInput(req);
    return this.deps.models.writeForUser(actor, userId, async (trx, log) => {
      if (input.trainingJobId) {
        const earlier = await repo.findByTrainingJob(trx, userId, input.trainingJobId);
        if (earlier) return { ...earlier, modelId: (await modelRepo.findModelByConsent(trx, earlier.id))?.id };
      }
      let model: VoiceModelRecord | undefined;
      if (input.modelId) {
        model = await modelRepo.findModelForUpdate(trx, input.modelId);
        if (!model || model.deletedAt) throw new AppError("VOICE_MODEL_NOT_FOUND", `voice model ${input.modelId} not found`, { modelId: input.modelId });
        assertCanWrite(actor.caller, model);
        if (model.userId !== userId) throw invalidArgument("modelId", `${input.modelId} is not a model of user ${userId}`);
        if (input.trainingJobId && model.trainingJobId !== input.trainingJobId) {
          throw invalidArgument("trainingJobId", `is not the training job of voice model ${model.id}`);
        }
      } else if (input.trainingJobId) {
        model = await modelRepo.findByTrainingJob(trx, userId, input.trainingJobId);
      }
      if (model?.consentId) {
        throw new AppError("CONSENT_EXISTS", `voice model ${model.id} already has consent record ${model.consentId}`, { modelId: model.id });
      }
      const consent = await repo.insertConsent(trx, {
        userId,
        trainingJobId: input.trainingJobId ?? model?.trainingJobId,
        speakerKind: input.speakerKind,
        speakerName: input.speakerName,
        statementText: input.statementText,
        statementVersion: input.statementVersion,
        captureMethod: input.captureMethod,
        capturedAt: input.capturedAt,
        recordedBy: actor.caller.userId,
        samples: input.samples,
      });
      if (model) await modelRepo.patchModel(trx, log, model.id, { consentId: consent.id });
      return { ...consent, modelId: model?.id };
    });
  }

  /** A record the caller may read. */
  async get(actor: Actor, id: string): Promise<ConsentView> {
    const consentId = valid.uuid(id, "consentId", "a consent id");
    const consent = await repo.findConsent(this.deps.knex, consentId);
    if (!consent) throw consentNotFound(consentId);
    assertCanReadConsent(actor.caller, consent);
    return this.view(consent);
  }

  async list(actor: Actor, req: ListConsentsRequest): Promise<{ consents: ConsentView[]; nextPageToken: string }> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    if (userId !== actor.caller.userId && !hasRole(actor.caller, "admin")) {
      throw accessDenied("only the owner and admins may list consent records", { field: "userId", userId });
    }
    const limit = valid.pageLimit(req.limit);
    const scope = { callerId: actor.caller.userId, filters: { userId } };
    let after: { createdAtMs: number; id: string } | undefined;
    if (req.pageToken) {
      const [createdAtMs, id] = this.deps.pageTokens.open("ListConsents", scope, CURSOR, req.pageToken);
      after = { createdAtMs: createdAtMs as number, id: id as string };
    }
    const rows = await repo.listConsents(this.deps.knex, userId, limit, after);
    const models = await modelRepo.modelIdsByConsent(this.deps.knex, rows.map((r) => r.id));
    const consents = rows.map((r) => ({ ...r, modelId: models.get(r.id) }));
    const last = rows[rows.length - 1];
    const nextPageToken = rows.length === limit && last ? this.deps.pageTokens.mint("ListConsents", scope, CURSOR, [last.createdAt.getTime(), last.id]) : "";
    return { consents, nextPageToken };
  }

  /** RevokeConsent (owner or admin): the record goes, and the model it covers with it (withdrawal.ts). */
  async revoke(actor: Actor, id: string): Promise<WithdrawalResult> {
    const consentId = valid.uuid(id, "consentId", "a consent id");
    const found = await repo.findConsent(this.deps.knex, consentId);
    if (!found) throw consentNotFound(consentId);
    assertCanReadConsent(actor.caller, found);
    return this.deps.withdrawal.withdraw(actor, found.userId, consentId);
  }

  /**
   * UploadConsentRecording: sealed under a fresh key first, then the row points at it; the old
   * recording (if any) and any object a failed write left are deleted.
   */
  async uploadRecording(actor: Actor, id: string, bytes: AsyncIterable<Uint8Array>, expectSha256: string | undefined): Promise<ConsentView> {
    const consentId = valid.uuid(id, "consentId", "a consent id");
    if (expectSha256 !== undefined) sha256(expectSha256, "sha256");
    const found = await repo.findConsent(this.deps.knex, consentId);
    if (!found) throw consentNotFound(consentId);
    assertCanWriteConsent(actor.caller, found);
    const key = `${found.userId}/consents/${consentId}/${randomUUID()}`;
    const sealedStore = this.deps.sealed;
    const discard = (k: string) => sealedStore.blobs.delete(k).catch(() => undefined);
    let sealed;
    try {
      sealed = await sealedStore.write(key, limited(bytes, this.deps.maxRecordingBytes));
    } catch (error) {
      await discard(key);
      throw error;
    }
    if (expectSha256 !== undefined && sealed.sha256 !== expectSha256) {
      await discard(key);
      throw invalidArgument("sha256", `the bytes hash to ${sealed.sha256}, not ${expectSha256}`);
    }
    let previous: string | undefined;
    let updated: ConsentRecord;
    try {
      updated = await inTransaction(this.deps.knex, async (trx) => {
        const current = await repo.findConsent(trx, consentId, { forUpdate: true });
        if (!current) throw consentNotFound(consentId);
        previous = current.recording?.key;
        return repo.setRecording(trx, consentId, sealed);
      }, { deadlineMs: actor.deadlineMs });
    } catch (error) {
      await discard(key);
      throw error;
    }
    if (previous && previous !== key) await discard(previous);
    return this.view(updated);
  }

  /** ReadConsentRecording (owner or admin): the recording's plaintext and what it is. */
  async recording(actor: Actor, id: string): Promise<{ sizeBytes: number; sha256: string; bytes: AsyncIterable<Buffer> }> {
    const consentId = valid.uuid(id, "consentId", "a consent id");
    const consent = await repo.findConsent(this.deps.knex, consentId);
    if (!consent) throw consentNotFound(consentId);
    assertCanReadConsent(actor.caller, consent);
    const rec = consent.recording;
    if (!rec) throw new AppError("CONSENT_RECORDING_MISSING", `consent record ${consentId} has no recording`, { field: "consentId" });
    return { sizeBytes: rec.sizeBytes, sha256: rec.sha256, bytes: await this.deps.sealed.read(rec) };
  }

  /** ListModelsMissingConsent (admin): completed live models without consent, oldest first. */
  async missing(actor: Actor, req: ListModelsMissingConsentRequest) {
    if (!hasRole(actor.caller, "admin")) throw accessDenied("ListModelsMissingConsent needs the admin role");
    const userId = req.userId === undefined || req.userId === "" ? undefined : valid.userId(req.userId);
    const limit = valid.pageLimit(req.limit);
    const scope = { callerId: actor.caller.userId, filters: { userId: userId ?? null } };
    let after: { createdAtMs: number; id: string } | undefined;
    if (req.pageToken) {
      const [createdAtMs, id] = this.deps.pageTokens.open("ListModelsMissingConsent", scope, CURSOR, req.pageToken);
      after = { createdAtMs: createdAtMs as number, id: id as string };
    }
    const page = await modelRepo.modelsMissingConsent(this.deps.knex, { userId }, limit, after);
    const last = page.models[page.models.length - 1];
    const nextPageToken =
      page.models.length === limit && last ? this.deps.pageTokens.mint("ListModelsMissingConsent", scope, CURSOR, [last.createdAt.getTime(), last.id]) : "";
    return { ...page, nextPageToken };
  }
}
