import pg from "pg";
import type { Logger } from "pino";

/** application_name of the LISTEN connection (lets tests and operators find it). */
export const LISTENER_APPLICATION_NAME = "voice-model-listener";

/** What a room does with one channel's notifications. */
export interface ChannelHandler {
  onMessage(payload: string): void;
  /**
   * Whether notifications reach us: false when the connection is lost (anything sent meanwhile
   * is missed), true once LISTEN is back on every channel.
   */
  onLive(live: boolean): void;
}

/**
 * The one LISTEN connection of an instance, shared by every room that listens (cache
 * invalidation, change events). A session-level LISTEN cannot go through a transaction pooler,
 * so it has its own URL (DATABASE_LISTEN_URL). It reconnects with backoff after a loss.
 */
export class Notifications {
  private readonly handlers = new Map<string, ChannelHandler[]>();
  private client: pg.Client | undefined;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs = 50;

  constructor(
    private readonly databaseUrl: string,
    private readonly log: Logger,
  ) {}

  /** Registers a channel's handler; before start. */
  listen(channel: string, handler: ChannelHandler): void {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`bad channel name ${channel}`);
    this.handlers.set(channel, [...(this.handlers.get(channel) ?? []), handler]);
  }

  /** Connects (resolves once LISTEN is up or the first attempt failed; retries go on behind). */
  async start(): Promise<void> {
    if (this.handlers.size > 0) await this.connect();
  }

  private each(fn: (handler: ChannelHandler) => void) {
    for (const handlers of this.handlers.values()) for (const handler of handlers) fn(handler);
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client({
      connectionString: this.databaseUrl,
      application_name: LISTENER_APPLICATION_NAME,
      keepAlive: true,
      connectionTimeoutMillis: 5_000,
    });
    this.client = client;
    let lost = false;
    const onLost = (error?: Error) => {
      if (lost) return;
      lost = true;
      this.each((h) => h.onLive(false));
      client.removeAllListeners("notification");
      client.end().catch(() => {});
      if (this.stopped) return;
      this.log.warn({ err: error?.message }, "LISTEN connection lost; reconnecting");
      this.scheduleReconnect();
    };
    client.on("error", onLost);
    client.on("end", () => onLost());
    client.on("notification", (msg) => {
      for (const handler of this.handlers.get(msg.channel) ?? []) handler.onMessage(msg.payload ?? "");
    });
    try {
      await client.connect();
      await client.query([...this.handlers.keys()].map((channel) => `LISTEN ${channel}`).join("; "));
      if (lost || this.stopped) return;
      this.backoffMs = 50;
      this.each((h) => h.onLive(true));
    } catch (error) {
      onLost(error as Error);
    }
  }

  private scheduleReconnect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), this.backoffMs);
    this.retryTimer.unref();
    this.backoffMs = Math.min(this.backoffMs * 2, 5_000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const client = this.client;
    this.client = undefined;
    if (client) {
      this.each((h) => h.onLive(false));
      await client.end().catch(() => {});
    }
  }
}
