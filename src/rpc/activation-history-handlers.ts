import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ActivationHistoryEntrySchema } from "../../gen/voicemodel/v1/activation_history_pb";
import type { HistoryEntry } from "../voice-models/activation-history";
import type { ActivationHistoryService } from "../voice-models/activation-history-service";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

function entryToProto(e: HistoryEntry): MessageInitShape<typeof ActivationHistoryEntrySchema> {
  return {
    id: e.id,
    userId: e.userId,
    previousModelId: e.previousModelId,
    newModelId: e.newModelId,
    reason: e.reason,
    actorId: e.actorId,
    requestId: e.requestId,
    createdAt: timestampFromDate(e.createdAt),
    undoneEntryId: e.undoneEntryId,
  };
}

/** Thin handlers of the activation history: one domain call each. */
export function activationHistoryHandlers(history: ActivationHistoryService): Pick<VoiceModelHandlers, "listActivationHistory" | "rollbackActiveModel"> {
  return {
    async listActivationHistory(req, ctx) {
      const page = await history.list(ctx, req);
      return { entries: page.entries.map(entryToProto), nextPageToken: page.nextPageToken };
    },
    async rollbackActiveModel(req, ctx) {
      const { model, entry } = await history.rollback(ctx, req);
      return { model: toProto(model), entry: entryToProto(entry) };
    },
  };
}
