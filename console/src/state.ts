// What the signed-in console knows, and the live change stream that keeps it current.
import type { VoiceModel } from "../../gen/voicemodel/v1/voice_model_pb";
import type { VoiceModelEvent } from "../../gen/voicemodel/v1/events_pb";
import { api } from "./api";

export const session = { userId: "", roles: [] as string[] };
export const isAdmin = () => session.roles.includes("admin");

type Listener = (event: VoiceModelEvent) => void;
const listeners = new Set<Listener>();
/** A view hears every change while it is shown; the returned function stops it. */
export function onChange(listener: Listener): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

let watching: AbortController | undefined;
/** Follows WatchVoiceModelEvents, resuming after the last event seen when the stream drops. */
export function watch(setLive: (text: string) => void): void {
  watching?.abort();
  const abort = new AbortController();
  watching = abort;
  let after: bigint | undefined;
  let backoff = 1000;
  const loop = async () => {
    while (!abort.signal.aborted) {
      try {
        setLive("live");
        for await (const reply of api.watchVoiceModelEvents({ afterEventId: after }, { signal: abort.signal })) {
          backoff = 1000;
          if (reply.item.case === "event") {
            after = reply.item.value.eventId;
            for (const listener of listeners) listener(reply.item.value);
          } else if (reply.item.case === "heartbeat" && reply.item.value.resumeAfterEventId) {
            after = reply.item.value.resumeAfterEventId;
          }
        }
      } catch {
        if (abort.signal.aborted) return;
      }
      setLive("reconnecting");
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(backoff * 2, 30_000);
    }
  };
  void loop();
}
export function stopWatching(): void {
  watching?.abort();
  watching = undefined;
}

/** A model's name for people: its path, then its number. */
export const modelName = (m: VoiceModel) => `${m.modelPath} (#${m.modelNumber})`;
