import type { Knex } from "knex";
import type {
  CreateVoiceModelRequest,
  ListVoiceModelsRequest,
  UpdateVoiceModelRequest,
} from "../../gen/voicemodel/v1/voice_model_service_pb";
import { hasRole, resolveTargetUser, type Caller } from "../auth/caller";
import { inTransaction, type Tx } from "../db/transaction";
import { accessDenied, AppError, invalidArgument, modelNotFound } from "../errors";
import { assertCanWrite, canRead, SharedAccess } from "./access";
import * as activation from "./activation";
import * as history from "./activation-history";
import { batchModelIds, runItems, type ItemOutcome } from "./batch";
import { DEFAULT_SAMPLE_RATE } from "./constants";
import type { PageTokens } from "../paging/page-token";
import { decodePageToken, encodePageToken } from "./paging";
import { componentsToMillis, scoreToMillis, weightedMillis } from "./quality";
import * as repo from "./repository";
import * as valid from "./validation";
import { ChangeLog, type Actor, type ModelChangeListener } from "./model-events";
import { etagOf, type VoiceModelRecord } from "./voice-model";
import type { ModelReadCache } from "./read-cache";

const UPDATABLE = ["qualityScore", "sampleRate", "status", "metadata", "modelPath"] as const;
type Updatable = (typeof UPDATABLE)[number];

/** DeleteVoiceModel's result: the deleted model and the user's active model after it. */
export interface DeleteResult {
  model: VoiceModelRecord;
  activeModelId: string | undefined;
}

/** A model with its lineage as the caller may see it (GetVoiceModelLineage). */
export interface LineageResult extends repo.Lineage {
  model: VoiceModelRecord;
}

export interface ListResult {
  models: VoiceModelRecord[];
  total: number;
  nextPageToken: string;
}

/** For rooms that create a model together with rows of their own (model files: ingest, import). */
export interface CreateOptions {
  /** The new model's id (so its file can be stored under it before the row exists). */
  id?: string;
  /** Runs in the create transaction right after the insert (before activation and listeners). */
  attach?: (trx: Tx, log: ChangeLog, model: VoiceModelRecord) => Promise<VoiceModelRecord>;
  /**
   * A parentModelId that is not one of the user's models is dropped instead of refused (import:
   * an export names the exporter's parent, which is kept only when it is the importer's own).
   */
  parentOnlyIfOwn?: boolean;
}

/**
 * The consent record a new model is created with (the consent room's, passed in): the one named
 * by consentId (refused INVALID_ARGUMENT unless it is the user's and covers no other model), else
 * the one recorded for its training job, else none. Runs in the create's transaction.
 */
export type ConsentForNewModel = (trx: Tx, userId: string, ask: { consentId?: string; trainingJobId?: string }) => Promise<string | undefined>;

/** The one refusal of a parent or lineage_of id that is not the user's: unknown and foreign alike. */
const notUsersModel = (field: string, modelId: string, userId: string) =>
  invalidArgument(field, `${modelId} is not a model of user ${userId} (live or soft-deleted)`);

/** The core lifecycle of voice models. Every method takes the verified actor first. */
export class VoiceModelService {
  private readonly listeners: ModelChangeListener[] = [];

  private readonly reads: ModelReadCache;
  private readonly pageTokens: PageTokens;
  /** What shares grant; every room checks view/use access through this one object. */
  readonly access: SharedAccess;

  constructor(
    private readonly knex: Knex,
    deps: {
      /** Mints and opens ListVoiceModels page tokens. */
      pageTokens: PageTokens;
      /** Read-through cache for get, list and getActive (src/cache). */
      reads: ModelReadCache;
      /** What shares grant; every room checks view/use access through this one object. */
      access: SharedAccess;
      /** CONSENT_REQUIRED: no model without consent becomes completed or active. */
      consentRequired?: boolean;
      consentForNewModel?: ConsentForNewModel;
    },
  ) {
    this.pageTokens = deps.pageTokens;
    this.reads = deps.reads;
    this.access = deps.access;
    this.consentRequired = deps.consentRequired ?? false;
    this.consentForNewModel = deps.consentForNewModel;
  }

  readonly consentRequired: boolean;
  private readonly consentForNewModel: ConsentForNewModel | undefined;

  /** Adds a listener that runs in every writing transaction (see ModelChangeListener). */
  onChange(listener: ModelChangeListener): void {
    this.listeners.push(listener);
  }

  async create(actor: Actor, req: CreateVoiceModelRequest, options: CreateOptions = {}): Promise<VoiceModelRecord> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const row = newModelRow(userId, req);
    return this.write(actor, async (trx, log) => {
      await repo.lockOwner(trx, userId);
      if (row.trainingJobId) {
        const existing = await repo.findByTrainingJob(trx, userId, row.trainingJobId);
        if (existing) return existing;
      }
      let parentModelId = row.parentModelId;
      if (parentModelId) {
        // FOR SHARE: a purge of the parent waits for this create, then finds the child.
        const parent = await repo.findModelForShare(trx, parentModelId);
        if (parent?.userId !== userId) {
          if (!options.parentOnlyIfOwn) throw notUsersModel("parentModelId", parentModelId, userId);
          parentModelId = undefined;
        }
      }
      const consentId = this.consentForNewModel
        ? await this.consentForNewModel(trx, userId, { consentId: row.consentId ?? undefined, trainingJobId: row.trainingJobId ?? undefined })
        : undefined;
      let created = await repo.insertModel(trx, log, { ...row, parentModelId, consentId, ...(options.id ? { id: options.id } : {}) });
      if (options.attach) created = await options.attach(trx, log, created);
      return created.status === "completed" ? activation.onCompleted(trx, log, created) : created;
    });
  }

  async get(actor: Actor, id: string): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(id);
    const model = await this.findAnyModel(modelId);
    if (!model) throw modelNotFound(modelId);
    await this.access.assertCanView(this.knex, actor.caller, model);
    if (model.deletedAt) throw modelNotFound(modelId);
    return model;
  }

  async getActive(actor: Actor, requestedUserId: string | undefined): Promise<VoiceModelRecord | undefined> {
    const userId = resolveTargetUser(actor.caller, requestedUserId);
    return this.reads.active(userId, () => repo.findActiveModel(this.knex, userId));
  }

  async list(actor: Actor, req: ListVoiceModelsRequest): Promise<ListResult> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const filters: repo.ListFilters = {
      userId,
      provider: req.provider === undefined ? undefined : valid.provider(req.provider),
      isActive: req.isActive,
      minQualityMillis:
        req.minQualityScore === undefined ? undefined : scoreToMillis(req.minQualityScore, "minQualityScore"),
      status: req.status === undefined ? undefined : valid.status(req.status),
      showDeleted: req.showDeleted ?? false,
      lineageOf: req.lineageOf === undefined ? undefined : valid.modelId(req.lineageOf, "lineageOf"),
      consentMissing: req.consentMissing,
    };
    const limit = valid.pageLimit(req.limit);
    const offset = valid.offset(req.offset);
    const order = valid.listOrder(req.orderBy);
    if (filters.lineageOf !== undefined) {
      const root = await this.findAnyModel(filters.lineageOf);
      if (root?.userId !== userId) throw notUsersModel("lineageOf", filters.lineageOf, userId);
    }
    // A token opens only for the caller, filters and order it was minted for.
    const scope = { callerId: actor.caller.userId, filters: order === "default" ? filters : { ...filters, order } };
    let after;
    if (req.pageToken) {
      if (offset !== 0) throw invalidArgument("offset", "must be 0 when pageToken is given");
      after = decodePageToken(this.pageTokens, scope, req.pageToken);
    }
    const page = { limit, offset, after, order };
    const { models, total } = await this.reads.list(userId, JSON.stringify({ filters, page }), () => repo.listModels(this.knex, filters, page));
    const nextPageToken = models.length === limit ? encodePageToken(this.pageTokens, scope, models[models.length - 1]) : "";
    return { models, total, nextPageToken };
  }

  /**
   * A model's ancestors and descendants (repository.lineageOf), soft-deleted ones included; the
   * model itself may be soft-deleted too. A caller who may view it only through a share sees
   * only the relatives shared with them as well.
   */
  async lineage(actor: Actor, id: string): Promise<LineageResult> {
    const modelId = valid.modelId(id);
    const model = await this.findAnyModel(modelId);
    if (!model) throw modelNotFound(modelId);
    await this.access.assertCanView(this.knex, actor.caller, model);
    const lineage = await repo.lineageOf(this.knex, modelId);
    if (canRead(actor.caller, model)) return { model, ...lineage };
    const viewable = async (models: VoiceModelRecord[]) => {
      const out: VoiceModelRecord[] = [];
      for (const m of models) if (await this.access.canView(this.knex, actor.caller, m)) out.push(m);
      return out;
    };
    return { model, ancestors: await viewable(lineage.ancestors), descendants: await viewable(lineage.descendants), truncated: lineage.truncated };
  }

  /** A model by id, live or soft-deleted, through the read cache. */
  private findAnyModel(modelId: string): Promise<VoiceModelRecord | undefined> {
    return this.reads.model(modelId, () => repo.findModel(this.knex, modelId));
  }

  async update(actor: Actor, req: UpdateVoiceModelRequest): Promise<VoiceModelRecord> {
    // Validated before any transaction opens: bad input costs no round trip.
    const plan = updatePlan(actor.caller, req);
    return this.write(actor, (trx, log) => this.applyUpdate(trx, log, actor, plan));
  }

  async delete(actor: Actor, id: string): Promise<DeleteResult> {
    const modelId = valid.modelId(id);
    return this.write(actor, (trx, log) => this.applyDelete(trx, log, actor, modelId));
  }

  /**
   * BatchGetVoiceModels: each id answered as get answers it (cache, shares, deleted models),
   * per position, so a repeated id is answered twice.
   */
  async batchGet(actor: Actor, ids: readonly string[]): Promise<ItemOutcome<VoiceModelRecord>[]> {
    const modelIds = batchModelIds(ids, "modelIds");
    return runItems(modelIds, false, (modelId) => this.get(actor, modelId));
  }

  /**
   * BatchUpdateVoiceModels: each item by update's rules, in order; each in its own transaction,
   * or all in one (allOrNothing: the first refused item fails the whole, nothing is written).
   */
  async batchUpdate(actor: Actor, items: readonly UpdateVoiceModelRequest[], allOrNothing: boolean): Promise<ItemOutcome<VoiceModelRecord>[]> {
    batchModelIds(items.map((item) => item.modelId), "items", "modelId");
    if (!allOrNothing) return runItems(items, false, (item) => this.update(actor, item));
    return this.write(actor, (trx, log) => runItems(items, true, (item) => this.applyUpdate(trx, log, actor, updatePlan(actor.caller, item))));
  }

  /** BatchDeleteVoiceModels: each id by delete's rules, in order (a repeated id is then not found). */
  async batchDelete(actor: Actor, ids: readonly string[], allOrNothing: boolean): Promise<ItemOutcome<DeleteResult>[]> {
    const modelIds = batchModelIds(ids, "modelIds");
    if (!allOrNothing) return runItems(modelIds, false, (modelId) => this.delete(actor, modelId));
    return this.write(actor, (trx, log) => runItems(modelIds, true, (modelId) => this.applyDelete(trx, log, actor, modelId)));
  }

  /** UpdateVoiceModel's rules in the caller's transaction (a single call's, or a whole batch's). */
  private async applyUpdate(trx: Tx, log: ChangeLog, actor: Actor, { modelId, changes, etag }: UpdatePlan): Promise<VoiceModelRecord> {
    const model = await this.lockedModel(trx, actor, modelId);
    if (etag !== undefined && etag !== etagOf(model)) {
      throw new AppError("ETAG_MISMATCH", `voice model ${modelId} changed since etag ${etag} (now ${etagOf(model)})`, {
        modelId,
        field: "etag",
      });
    }
    if (changes.modelPath !== undefined && model.hasFile) {
      throw invalidArgument("modelPath", `voice model ${modelId} has a stored file; its modelPath is the service's key and cannot be changed`);
    }
    // A copy: the plan stays as validated (a retried transaction applies it again).
    const patch = { ...changes };
    const leavesCompleted = patch.status !== undefined && model.status === "completed" && patch.status !== "completed";
    const becomesCompleted = patch.status === "completed" && model.status !== "completed";
    if (leavesCompleted && model.isActive) patch.isActive = false;
    if (patch.status !== undefined && patch.status !== model.status) log.cause = "status_changed";
    const updated = await repo.patchModel(trx, log, modelId, patch);
    if (leavesCompleted && model.isActive) await activation.replaceActive(trx, log, updated, "model_not_completed");
    if (becomesCompleted) return activation.onCompleted(trx, log, updated);
    return updated;
  }

  /** DeleteVoiceModel's rules in the caller's transaction (a single call's, or a whole batch's). */
  private async applyDelete(trx: Tx, log: ChangeLog, actor: Actor, modelId: string): Promise<DeleteResult> {
    const model = await this.lockedModel(trx, actor, modelId);
    const deleted = await repo.patchModel(trx, log, modelId, { isActive: false, deletedAt: new Date() }, "deleted");
    const active = model.isActive ? await activation.replaceActive(trx, log, deleted, "model_deleted") : await repo.findActiveModel(trx, model.userId);
    return { model: deleted, activeModelId: active?.id };
  }

  async activate(actor: Actor, id: string): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(id);
    return this.writeLocked(actor, modelId, async (trx, log, model) => {
      if (model.status !== "completed") {
        throw new AppError("MODEL_NOT_COMPLETED", `voice model ${modelId} is ${model.status}; only completed models can be active`, {
          modelId,
        });
      }
      if (model.isActive) throw new AppError("ALREADY_ACTIVE", `voice model ${modelId} is already active`, { modelId });
      return activation.makeActive(trx, log, model, "activated");
    });
  }

  async deactivate(actor: Actor, id: string): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(id);
    return this.writeLocked(actor, modelId, async (trx, log, model) =>
      model.isActive ? activation.deactivate(trx, log, model, "deactivated") : model,
    );
  }

  /**
   * A write of another room that changes activation (SelectBestVoiceModel's activate): fn runs
   * in one transaction holding the user's owner lock, and the changes it logs reach the
   * listeners before commit, like the service's own writes.
   */
  writeForUser<T>(actor: Actor, userId: string, fn: (trx: Tx, log: ChangeLog) => Promise<T>): Promise<T> {
    return this.write(actor, async (trx, log) => {
      await repo.lockOwner(trx, userId);
      return fn(trx, log);
    });
  }

  /**
   * One writing transaction: the changes fn's repository writes log go to the listeners before
   * commit, and its activation changes to the activation history (which refuses, as INTERNAL, a
   * transaction that changed the active model without recording why). Other rooms use it
   * directly for writes that change no activation (the purge, the cleanup's batches); writes
   * that may, go through writeForUser.
   */
  write<T>(actor: Actor, fn: (trx: Tx, log: ChangeLog) => Promise<T>): Promise<T> {
    return inTransaction(
      this.knex,
      async (trx) => {
        const log = new ChangeLog(this.consentRequired);
        const result = await fn(trx, log);
        const [consentless] = log.consentlessPromotions();
        if (consentless) throw consentMissing(consentless.model);
        await history.writeHistory(trx, log, actor);
        if (log.changes.length > 0 || log.erasure) for (const listener of this.listeners) await listener(trx, log.changes, actor, log);
        return result;
      },
      { deadlineMs: actor.deadlineMs },
    );
  }

  /**
   * A write on one live model, holding its owner's lock, after checking the caller may change
   * it. The model is re-read under the lock, so fn sees current state.
   */
  private writeLocked<T>(
    actor: Actor,
    modelId: string,
    fn: (trx: Tx, log: ChangeLog, model: VoiceModelRecord) => Promise<T>,
  ): Promise<T> {
    return this.write(actor, async (trx, log) => fn(trx, log, await this.lockedModel(trx, actor, modelId)));
  }

  /** The live model, once the caller may change it, re-read under its owner's lock in trx. */
  private async lockedModel(trx: Tx, actor: Actor, modelId: string): Promise<VoiceModelRecord> {
    const found = await repo.findModel(trx, modelId);
    if (!found) throw modelNotFound(modelId);
    assertCanWrite(actor.caller, found);
    await repo.lockOwner(trx, found.userId);
    const model = await repo.findModelForUpdate(trx, modelId);
    if (!model || model.deletedAt) throw modelNotFound(modelId);
    return model;
  }
}

function newModelRow(userId: string, req: CreateVoiceModelRequest): repo.NewModel {
  if (req.qualityScore !== undefined && req.qualityComponents !== undefined) {
    throw invalidArgument("qualityComponents", "give qualityScore or qualityComponents, not both");
  }
  const components = req.qualityComponents ? componentsToMillis(req.qualityComponents, "qualityComponents") : undefined;
  const scoreMillis = components
    ? weightedMillis(components)
    : req.qualityScore === undefined
      ? 0
      : scoreToMillis(req.qualityScore, "qualityScore");
  return {
    userId,
    provider: valid.provider(req.provider),
    modelPath: valid.modelPath(req.modelPath),
    sampleRate: req.sampleRate === undefined ? DEFAULT_SAMPLE_RATE : valid.sampleRate(req.sampleRate),
    qualityScore: scoreMillis / 1000,
    qualityComponents: components
      ? {
          similarity: components.similarity / 1000,
          naturalness: components.naturalness / 1000,
          clarity: components.clarity / 1000,
          consistency: components.consistency / 1000,
        }
      : null,
    metadata: valid.metadata(req.metadata),
    status: req.status === undefined ? "completed" : valid.status(req.status),
    trainingJobId: req.trainingJobId === undefined ? null : valid.trainingJobId(req.trainingJobId),
    sizeBytes: req.sizeBytes === undefined ? null : sizeBytes(req.sizeBytes),
    parentModelId: req.parentModelId === undefined ? undefined : valid.modelId(req.parentModelId, "parentModelId"),
    consentId: req.consentId === undefined ? undefined : valid.uuid(req.consentId, "consentId", "a consent id"),
  };
}

/** CONSENT_REQUIRED refused a write that would make a model without consent completed or active. */
function consentMissing(model: VoiceModelRecord): AppError {
  const what = model.isActive ? "active" : "completed";
  return new AppError(
    "CONSENT_MISSING",
    `voice model ${model.id} of user ${model.userId} has no consent record and cannot become ${what} (CONSENT_REQUIRED); record consent first (RecordConsent)`,
    { modelId: model.id, userId: model.userId },
  );
}

/** An optional file size given at creation (storage analytics); 0 up to 1 TB. */
function sizeBytes(value: bigint): number {
  if (value < 0n || value > 1_000_000_000_000n) throw invalidArgument("sizeBytes", "must be from 0 to 1000000000000");
  return Number(value);
}

const MASK_PATHS: Record<string, Updatable> = {
  quality_score: "qualityScore",
  qualityScore: "qualityScore",
  sample_rate: "sampleRate",
  sampleRate: "sampleRate",
  status: "status",
  metadata: "metadata",
  model_path: "modelPath",
  modelPath: "modelPath",
};

/** An update request, validated: which model, the changes, the etag it must still have. */
interface UpdatePlan {
  modelId: string;
  changes: repo.ModelPatch;
  etag: string | undefined;
}

function updatePlan(caller: Caller, req: UpdateVoiceModelRequest): UpdatePlan {
  return { modelId: valid.modelId(req.modelId), changes: updateChanges(caller, req), etag: req.etag };
}

/** The changes an update asks for, validated; nothing is written when this throws. */
function updateChanges(caller: Caller, req: UpdateVoiceModelRequest): repo.ModelPatch {
  let fields: Set<Updatable>;
  if (req.updateMask && req.updateMask.paths.length > 0) {
    fields = new Set();
    for (const path of req.updateMask.paths) {
      const column = MASK_PATHS[path];
      if (!column) throw invalidArgument("updateMask", `cannot update "${path}"; updatable: qualityScore, sampleRate, status, metadata, modelPath`);
      fields.add(column);
    }
  } else {
    fields = new Set(UPDATABLE.filter((f) => req[f] !== undefined));
  }
  if (fields.size === 0) throw invalidArgument("updateMask", "names no field to change");

  const changes: repo.ModelPatch = {};
  const required = <T>(value: T | undefined, field: string): T => {
    if (value === undefined) throw invalidArgument(field, "is in updateMask but not in the request");
    return value;
  };
  if (fields.has("qualityScore")) {
    changes.qualityScore = scoreToMillis(required(req.qualityScore, "qualityScore"), "qualityScore") / 1000;
    // A new overall score no longer matches the old components.
    changes.qualityComponents = null;
  }
  if (fields.has("sampleRate")) changes.sampleRate = valid.sampleRate(required(req.sampleRate, "sampleRate"));
  if (fields.has("modelPath")) changes.modelPath = valid.modelPath(required(req.modelPath, "modelPath"));
  if (fields.has("metadata")) changes.metadata = valid.metadata(req.metadata);
  if (fields.has("status")) {
    const status = valid.status(required(req.status, "status"));
    if (!hasRole(caller, "service") && !hasRole(caller, "admin")) {
      throw accessDenied("only the service and admin roles may change status", { field: "status", modelId: req.modelId });
    }
    changes.status = status;
  }
  return changes;
}
