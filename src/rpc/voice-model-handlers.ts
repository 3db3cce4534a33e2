import type { VoiceModelService as VoiceModelServiceDesc } from "../../gen/voicemodel/v1/voice_model_service_pb";
import type { ServiceHandlers } from "../server/handlers";
import type { VoiceModelService } from "../voice-models/voice-model-service";
import { toProto } from "./voice-model-mapper";

export type VoiceModelHandlers = ServiceHandlers<typeof VoiceModelServiceDesc>;

/** Thin handlers: one domain call each, the reply shaped from its result. */
export function voiceModelHandlers(models: VoiceModelService): VoiceModelHandlers {
  return {
    async createVoiceModel(req, { caller }) {
      return { model: toProto(await models.create(caller, req)) };
    },
    async getVoiceModel(req, { caller }) {
      return { model: toProto(await models.get(caller, req.modelId)) };
    },
    async listVoiceModels(req, { caller }) {
      const page = await models.list(caller, req);
      return { models: page.models.map(toProto), total: page.total, nextPageToken: page.nextPageToken };
    },
    async updateVoiceModel(req, { caller }) {
      return { model: toProto(await models.update(caller, req)) };
    },
    async deleteVoiceModel(req, { caller }) {
      const { model, activeModelId } = await models.delete(caller, req.modelId);
      return { model: toProto(model), activeModelId };
    },
    async activateVoiceModel(req, { caller }) {
      return { model: toProto(await models.activate(caller, req.modelId)) };
    },
    async deactivateVoiceModel(req, { caller }) {
      return { model: toProto(await models.deactivate(caller, req.modelId)) };
    },
    async getActiveVoiceModel(req, { caller }) {
      const model = await models.getActive(caller, req.userId);
      return { model: model ? toProto(model) : undefined };
    },
    async whoAmI(_req, { caller }) {
      return { userId: caller.userId, roles: [...caller.roles] };
    },
  };
}
