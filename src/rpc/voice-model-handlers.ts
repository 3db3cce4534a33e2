import { create } from "@bufbuild/protobuf";
import {
  WhoAmIResponseSchema,
  type VoiceModelService as VoiceModelServiceDesc,
  type WhoAmIResponse,
} from "../../gen/voicemodel/v1/voice_model_service_pb";
import type { Caller } from "../auth/caller";
import type { ServiceHandlers } from "./service-handlers";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import { toProto } from "./voice-model-mapper";

/** Every RPC of VoiceModelService; each room's handler factory supplies its part. */
export type VoiceModelHandlers = ServiceHandlers<typeof VoiceModelServiceDesc>;

// CreateVoiceModel is served with the model files (modelFileHandlers): it may ingest a file.
type CoreRpc =
  | "getVoiceModel"
  | "listVoiceModels"
  | "getVoiceModelLineage"
  | "updateVoiceModel"
  | "deleteVoiceModel"
  | "activateVoiceModel"
  | "deactivateVoiceModel"
  | "getActiveVoiceModel"
  | "whoAmI";

/** Thin handlers of the core lifecycle: one domain call each, the reply shaped from its result. */
export function voiceModelHandlers(models: VoiceModelService): Pick<VoiceModelHandlers, CoreRpc> {
  return {
    async getVoiceModel(req, ctx) {
      return { model: toProto(await models.get(ctx, req.modelId)) };
    },
    async listVoiceModels(req, ctx) {
      const page = await models.list(ctx, req);
      return { models: page.models.map(toProto), total: page.total, nextPageToken: page.nextPageToken };
    },
    async getVoiceModelLineage(req, ctx) {
      const { model, ancestors, descendants, truncated } = await models.lineage(ctx, req.modelId);
      return { model: toProto(model), ancestors: ancestors.map(toProto), descendants: descendants.map(toProto), truncated };
    },
    async updateVoiceModel(req, ctx) {
      return { model: toProto(await models.update(ctx, req)) };
    },
    async deleteVoiceModel(req, ctx) {
      const { model, activeModelId } = await models.delete(ctx, req.modelId);
      return { model: toProto(model), activeModelId };
    },
    async activateVoiceModel(req, ctx) {
      return { model: toProto(await models.activate(ctx, req.modelId)) };
    },
    async deactivateVoiceModel(req, ctx) {
      return { model: toProto(await models.deactivate(ctx, req.modelId)) };
    },
    async getActiveVoiceModel(req, ctx) {
      const model = await models.getActive(ctx, req.userId);
      return { model: model ? toProto(model) : undefined };
    },
    async whoAmI(_req, { caller }) {
      return whoAmIReply(caller);
    },
  };
}

/**
 * One reply message per verified caller (callers are immutable and cached with their token), so
 * the gRPC transport encodes it once: this RPC is the service's cheapest call.
 */
const whoAmIReplies = new WeakMap<Caller, WhoAmIResponse>();

function whoAmIReply(caller: Caller): WhoAmIResponse {
  let reply = whoAmIReplies.get(caller);
  if (!reply) whoAmIReplies.set(caller, (reply = create(WhoAmIResponseSchema, { userId: caller.userId, roles: [...caller.roles] })));
  return reply;
}
