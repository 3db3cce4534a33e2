import type { Knex } from "knex";
import type {
  CreateVoiceModelRequest,
  ListVoiceModelsRequest,
  UpdateVoiceModelRequest,
} from "../../gen/voicemodel/v1/voice_model_service_pb";
import { hasRole, resolveTargetUser, type Caller } from "../auth/caller";
import { inTransaction, type Tx } from "../db/transaction";
import { accessDenied, AppError, invalidArgument, modelNotFound } from "../errors";
import { assertCanWrite, SharedAccess } from "./access";
import * as activation from "./activation";
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
}

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
    },
  ) {
    this.pageTokens = deps.pageTokens;
    this.reads = deps.reads;
    this.access = deps.access;
  }

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
      let created = await repo.insertModel(trx, log, options.id ? { ...row, id: options.id } : row);
      if (options.attach) created = await options.attach(trx, log, created);
      return created.status === "completed" ? activation.onCompleted(trx, log, created) : created;
    });
  }

  async get(actor: Actor, id: string): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(id);
    const model = await this.reads.model(modelId, () => repo.findModel(this.knex, modelId));
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
    };
    const limit = valid.pageLimit(req.limit);
    const offset = valid.offset(req.offset);
    // A token opens only for the caller and filters it was minted for.
    const scope = { callerId: actor.caller.userId, filters };
    let after;
    if (req.pageToken) {
      if (offset !== 0) throw invalidArgument("offset", "must be 0 when pageToken is given");
      after = decodePageToken(this.pageTokens, scope, req.pageToken);
    }
    const page = { limit, offset, after };
    const { models, total } = await this.reads.list(userId, JSON.stringify({ filters, page }), () => repo.listModels(this.knex, filters, page));
    const nextPageToken = models.length === limit ? encodePageToken(this.pageTokens, scope, models[models.length - 1]) : "";
    return { models, total, nextPageToken };
  }

  async update(actor: Actor, req: UpdateVoiceModelRequest): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(req.modelId);
    const changes = updateChanges(actor.caller, req);
    return this.writeLocked(actor, modelId, async (trx, log, model) => {
      if (req.etag !== undefined && req.etag !== etagOf(model)) {
        throw new AppError("ETAG_MISMATCH", `voice model ${modelId} changed since etag ${req.etag} (now ${etagOf(model)})`, {
          modelId,
          field: "etag",
        });
      }
      if (changes.modelPath !== undefined && model.hasFile) {
        throw invalidArgument("modelPath", `voice model ${modelId} has a stored file; its modelPath is the service's key and cannot be changed`);
      }
      const leavesCompleted = changes.status !== undefined && model.status === "completed" && changes.status !== "completed";
      const becomesCompleted = changes.status === "completed" && model.status !== "completed";
      if (leavesCompleted && model.isActive) changes.isActive = false;
      if (changes.status !== undefined && changes.status !== model.status) log.cause = "status_changed";
      const updated = await repo.patchModel(trx, log, modelId, changes);
      if (leavesCompleted && model.isActive) await activation.replaceActive(trx, log, updated);
      if (becomesCompleted) return activation.onCompleted(trx, log, updated);
      return updated;
    });
  }

  async delete(actor: Actor, id: string): Promise<{ model: VoiceModelRecord; activeModelId: string | undefined }> {
    const modelId = valid.modelId(id);
    return this.writeLocked(actor, modelId, async (trx, log, model) => {
      const deleted = await repo.patchModel(trx, log, modelId, { isActive: false, deletedAt: new Date() }, "deleted");
      const active = model.isActive
        ? await activation.replaceActive(trx, log, deleted)
        : await repo.findActiveModel(trx, model.userId);
      return { model: deleted, activeModelId: active?.id };
    });
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
      return activation.makeActive(trx, log, model);
    });
  }

  async deactivate(actor: Actor, id: string): Promise<VoiceModelRecord> {
    const modelId = valid.modelId(id);
    return this.writeLocked(actor, modelId, async (trx, log, model) =>
      model.isActive ? repo.patchModel(trx, log, modelId, { isActive: false }, "deactivated") : model,
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
   * commit. Other rooms use it directly for writes that change no activation (the purge, the
   * cleanup's batches); writes that may, go through writeForUser.
   */
  write<T>(actor: Actor, fn: (trx: Tx, log: ChangeLog) => Promise<T>): Promise<T> {
    return inTransaction(this.knex, async (trx) => {
      const log = new ChangeLog();
      const result = await fn(trx, log);
      if (log.changes.length > 0 || log.erasure) for (const listener of this.listeners) await listener(trx, log.changes, actor, log);
      return result;
    });
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
    return this.write(actor, async (trx, log) => {
      const found = await repo.findModel(trx, modelId);
      if (!found) throw modelNotFound(modelId);
      assertCanWrite(actor.caller, found);
      await repo.lockOwner(trx, found.userId);
      const model = await repo.findModelForUpdate(trx, modelId);
      if (!model || model.deletedAt) throw modelNotFound(modelId);
      return fn(trx, log, model);
    });
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
  };
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
