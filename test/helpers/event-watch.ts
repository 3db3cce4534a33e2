import { ConnectError, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { VoiceModelEvent, WatchVoiceModelEventsRequestSchema } from "../../gen/voicemodel/v1/events_pb";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { grpcWebClient, connectJsonClient } from "./connect-client";
import { grpcStreamingClient } from "./streaming-client";
import type { TestServer } from "./harness";

export type WatchProtocol = "grpc" | "connect" | "grpc-web";
export const WATCH_PROTOCOLS: WatchProtocol[] = ["grpc", "connect", "grpc-web"];

export function watchClient(server: TestServer, protocol: WatchProtocol, token: string): Client<typeof VoiceModelService> {
  if (protocol === "grpc") return grpcStreamingClient(server.grpcPort, token);
  if (protocol === "connect") return connectJsonClient(VoiceModelService, server.baseUrl, token);
  return grpcWebClient(VoiceModelService, server.baseUrl, token);
}

/** An open WatchVoiceModelEvents stream, read in the background into `events`. */
export class EventWatch {
  readonly events: VoiceModelEvent[] = [];
  readonly heartbeats: bigint[] = [];
  error: ConnectError | undefined;
  ended = false;
  private readonly abort = new AbortController();
  readonly done: Promise<void>;

  /** `paused`: after the first message, read nothing more until it resolves (a slow reader). */
  constructor(
    client: Client<typeof VoiceModelService>,
    request: MessageInitShape<typeof WatchVoiceModelEventsRequestSchema> = {},
    paused?: Promise<void>,
  ) {
    this.done = (async () => {
      try {
        for await (const reply of client.watchVoiceModelEvents(request, { signal: this.abort.signal })) {
          if (paused && this.heartbeats.length > 0) await paused;
          if (reply.item.case === "event") this.events.push(reply.item.value);
          else if (reply.item.case === "heartbeat") this.heartbeats.push(reply.item.value.resumeAfterEventId);
        }
      } catch (error) {
        if (!this.abort.signal.aborted) this.error = ConnectError.from(error);
      } finally {
        this.ended = true;
      }
    })();
  }

  /** Waits until `ready` holds of what was received (or the stream ended); throws after ms. */
  async until(ready: (w: EventWatch) => boolean, ms = 10_000, what = "the expected events"): Promise<void> {
    const until = Date.now() + ms;
    while (!ready(this)) {
      if (this.ended) throw new Error(`the stream ended (${this.error?.message ?? "no error"}) before ${what}; got ${this.describe()}`);
      if (Date.now() > until) throw new Error(`not within ${ms} ms: ${what}; got ${this.describe()}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }

  /** Waits for the first heartbeat: the stream is open and positioned. */
  opened(): Promise<void> {
    return this.until((w) => w.heartbeats.length > 0, 10_000, "the first heartbeat");
  }

  describe(): string {
    return JSON.stringify(this.events.slice(-20).map((e) => [String(e.eventId), e.type, e.modelId.slice(0, 8)]));
  }

  get lastId(): bigint {
    return this.events.length ? this.events[this.events.length - 1].eventId : (this.heartbeats[0] ?? 0n);
  }

  async cancel(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}
