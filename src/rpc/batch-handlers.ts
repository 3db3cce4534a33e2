import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema, type ErrorInfo } from "../../gen/google/rpc/error_details_pb";
import type { Status } from "../../gen/google/rpc/status_pb";
import type { ItemOutcome } from "../voice-models/batch";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import type { VoiceModelRecord } from "../voice-models/voice-model";
import { errorReply, errorStatus } from "./error-reply";
import type { RequestContext } from "./service-handlers";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

type BatchRpc = "batchGetVoiceModels" | "batchUpdateVoiceModels" | "batchDeleteVoiceModels";

/** An item's result as the reply's oneof: the single call's model, or its error as google.rpc.Status. */
function result<T>(outcome: ItemOutcome<T>, ctx: RequestContext, model: (value: T) => VoiceModelRecord) {
  return outcome.ok
    ? { case: "model" as const, value: toProto(model(outcome.value)) }
    : { case: "error" as const, value: errorStatus(errorReply(outcome.error, ctx.requestId, ctx.log)) };
}

const itself = (model: VoiceModelRecord) => model;

/** Thin handlers of the batch calls: the domain runs the items, each result is shaped here. */
export function batchHandlers(models: VoiceModelService): Pick<VoiceModelHandlers, BatchRpc> {
  return {
    async batchGetVoiceModels(req, ctx) {
      const outcomes = await models.batchGet(ctx, req.modelIds);
      return { results: outcomes.map((o) => ({ result: result(o, ctx, itself) })) };
    },
    async batchUpdateVoiceModels(req, ctx) {
      const outcomes = await models.batchUpdate(ctx, req.items, req.allOrNothing);
      return { results: outcomes.map((o) => ({ result: result(o, ctx, itself) })) };
    },
    async batchDeleteVoiceModels(req, ctx) {
      const outcomes = await models.batchDelete(ctx, req.modelIds, req.allOrNothing);
      return {
        results: outcomes.map((o) => ({ result: result(o, ctx, (d) => d.model), activeModelId: o.ok ? o.value.activeModelId : undefined })),
      };
    },
  };
}

type BatchReply = { results?: Array<{ result?: { case?: string; value?: unknown } }> };

/** A failed item of a batch reply: its ErrorInfo and message, as its single call would have failed. */
export interface ItemError {
  info: ErrorInfo;
  message: string;
}

/** Each item of a batch reply that failed, by position (undefined: it succeeded). */
export function itemErrors(reply: unknown): Array<ItemError | undefined> {
  return ((reply as BatchReply).results ?? []).map(({ result }) => {
    if (result?.case !== "error") return undefined;
    const status = result.value as Status;
    const info = status.details[0] ? anyUnpack(status.details[0], ErrorInfoSchema) : undefined;
    return info ? { info, message: status.message } : undefined;
  });
}
