import type { Knex } from "knex";
import type { CompareVoiceModelsRequest, SelectBestVoiceModelRequest } from "../../gen/voicemodel/v1/usage_pb";
import { makeCaller, resolveTargetUser } from "../auth/caller";
import type { Db } from "../db/transaction";
import { invalidArgument } from "../errors";
import * as activation from "../voice-models/activation";
import type { Actor } from "../voice-models/model-events";
import { scoreToMillis } from "../voice-models/quality";
import * as repo from "../voice-models/repository";
import * as valid from "../voice-models/validation";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import type { ModelReadCache } from "../voice-models/read-cache";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import { explainBest, explainOrder, rankModels, type Candidate, type Criterion, type RankingCriteria } from "../voice-models/ranking";
import { withLatency } from "./latency";
import { EMPTY_SUMS, lifetimeSums } from "./usage-repository";
import { usableModel } from "./usable-model";
import { statsFromSums, type UsageStats } from "./usage-service";

export interface ComparedModel {
  model: VoiceModelRecord;
  usage: UsageStats;
  rank: number;
  note: string;
}

export interface Comparison {
  models: ComparedModel[];
  recommendation: { modelId: string; decidedBy: Criterion | "only_candidate" | ""; reason: string };
}

export interface Selection {
  model: VoiceModelRecord | undefined;
  reason: string;
  others: { modelId: string; excluded: boolean; reason: string }[];
  activated: boolean;
}

const COMPARE_MIN = 2;
const COMPARE_MAX = 10;

/** CompareVoiceModels and SelectBestVoiceModel, both on the one ranking (ranking.ts). */
export class SelectionService {
  constructor(
    private readonly knex: Knex,
    private readonly models: VoiceModelService,
    private readonly reads: ModelReadCache,
  ) {}

  async compare(actor: Actor, req: CompareVoiceModelsRequest): Promise<Comparison> {
    const reader = compareReader(actor, req.userId);
    const ids = req.modelIds;
    if (ids.length < COMPARE_MIN || ids.length > COMPARE_MAX) {
      throw invalidArgument("modelIds", `must hold ${COMPARE_MIN} to ${COMPARE_MAX} model ids`);
    }
    const normalized = ids.map((id, i) => valid.modelId(id, `modelIds[${i}]`));
    const seen = new Set<string>();
    normalized.forEach((id, i) => {
      if (seen.has(id)) throw invalidArgument(`modelIds[${i}]`, `${id} is given twice`);
      seen.add(id);
    });
    // Each id must exist and be readable by the caller (own, shared, or privileged): the first
    // that is not fails the call with its id. A privileged caller naming a user reads as that user.
    const models: VoiceModelRecord[] = [];
    for (const [i, id] of normalized.entries()) models.push(await usableModel(this.knex, this.reads, this.models.access, reader, id, `modelIds[${i}]`));

    const candidates = await withLatency(this.knex, models);
    const sums = await lifetimeSums(this.knex, normalized);
    const { ranked, excluded } = rankModels(candidates, {});
    const usageOf = (m: VoiceModelRecord) => statsFromSums(m.id, sums.get(m.id) ?? EMPTY_SUMS);
    const best = ranked[0];
    const rows: ComparedModel[] = ranked.map((c, i) => ({
      model: c.model,
      usage: usageOf(c.model),
      rank: i + 1,
      note: i === 0 ? "recommended" : explainOrder(best, c, {}).reason,
    }));
    excluded.forEach(({ candidate, reason }, j) =>
      rows.push({ model: candidate.model, usage: usageOf(candidate.model), rank: ranked.length + j + 1, note: `does not qualify: ${reason}` }),
    );
    if (!best) {
      return { models: rows, recommendation: { modelId: "", decidedBy: "", reason: "no model qualifies: none is completed" } };
    }
    const why = explainBest(best, ranked[1], {});
    return { models: rows, recommendation: { modelId: best.model.id, decidedBy: why.criterion, reason: why.reason } };
  }

  async selectBest(actor: Actor, req: SelectBestVoiceModelRequest): Promise<Selection> {
    const userId = resolveTargetUser(actor.caller, req.userId);
    const criteria = parseCriteria(req);
    if (!req.activate) return explainSelection(await liveCandidates(this.knex, userId), criteria, false);
    // Choice and activation in one transaction under the owner lock; the change reaches the
    // model listeners (cache invalidation) like any other activation.
    return this.models.writeForUser(actor, userId, async (trx, log) => {
      const candidates = await liveCandidates(trx, userId);
      const best = rankModels(candidates, criteria).ranked[0];
      if (!best || best.model.isActive) return explainSelection(candidates, criteria, false);
      const activated = await activation.makeActive(trx, log, best.model, "selected");
      return { ...explainSelection(candidates, criteria, true), model: activated };
    });
  }
}

function parseCriteria(req: SelectBestVoiceModelRequest): RankingCriteria {
  const c = req.criteria;
  if (!c) return {};
  const criteria: RankingCriteria = {};
  if (c.minQualityScore !== undefined) criteria.minQualityMillis = scoreToMillis(c.minQualityScore, "criteria.minQualityScore");
  if (c.preferredProvider !== undefined) criteria.preferredProvider = valid.provider(c.preferredProvider, "criteria.preferredProvider");
  if (c.maxLatency !== undefined) {
    if (!Number.isFinite(c.maxLatency) || c.maxLatency < 0) throw invalidArgument("criteria.maxLatency", "must be 0 or more (milliseconds)");
    criteria.maxLatency = c.maxLatency;
  }
  return criteria;
}

/** All of a user's live models (any status: the reply says why the others do not qualify). */
async function liveCandidates(db: Db, userId: string): Promise<Candidate[]> {
  return withLatency(db, await repo.liveModels(db, userId));
}

function explainSelection(candidates: Candidate[], criteria: RankingCriteria, activated: boolean): Selection {
  const { ranked, excluded } = rankModels(candidates, criteria);
  const best = ranked[0];
  const others = [
    ...ranked.slice(1).map((c) => ({ modelId: c.model.id, excluded: false, reason: explainOrder(best, c, criteria).reason })),
    ...excluded.map(({ candidate, reason }) => ({ modelId: candidate.model.id, excluded: true, reason })),
  ];
  if (!best) {
    const reason = candidates.length === 0 ? "the user has no live models" : `no model qualifies (${excluded.length} excluded)`;
    return { model: undefined, reason, others, activated: false };
  }
  return { model: best.model, reason: explainBest(best, ranked[1], criteria).reason, others, activated };
}

/** Whose read access a comparison checks: the caller, or the user a privileged caller names. */
function compareReader(actor: Actor, userId: string | undefined): Actor {
  if (userId === undefined || userId === "") return actor;
  const target = resolveTargetUser(actor.caller, userId);
  if (!actor.caller.privileged) return actor;
  return { caller: makeCaller(target, ["user"]), requestId: actor.requestId, clientAddress: actor.clientAddress };
}
