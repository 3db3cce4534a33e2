import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import type { EventService } from "../events/event-service";
import type { VoiceModelHandlers } from "./voice-model-handlers";
import { toProto } from "./voice-model-mapper";

/** The thin handler of the change-event stream. */
export function eventHandlers(events: EventService): Pick<VoiceModelHandlers, "watchVoiceModelEvents"> {
  return {
    async *watchVoiceModelEvents(req, ctx) {
      for await (const item of events.watch(ctx, req, ctx.signal)) {
        if (item.kind === "heartbeat") {
          yield { item: { case: "heartbeat", value: { at: timestampNow(), resumeAfterEventId: item.resumeAfter } } };
          continue;
        }
        const { event, targets } = item;
        yield {
          item: {
            case: "event",
            value: {
              eventId: event.id,
              type: event.type,
              userId: event.userId,
              modelId: event.modelId ?? "",
              at: timestampFromDate(event.at),
              model: event.model ? toProto(event.model) : undefined,
              targetUserIds: [...targets],
            },
          },
        };
      }
    },
  };
}
