import pg from "pg";
import type { Logger } from "pino";
import type { UserReadCache } from "./user-read-cache";

/** The NOTIFY channel writers announce changed users on (payload: the user id). */
export const CHANGES_CHANNEL = "voice_model_changes";
/** application_name of the LISTEN connection (lets tests and operators find it). */
export const LISTENER_APPLICATION_NAME = "voice-model-cache-listener";

/**
 * Keeps one LISTEN connection to PostgreSQL and drops the in-process entries of the users other
 * instances changed. While the connection is down the cache stops serving (its entries could
 * miss notifications); it reconnects with backoff and only serves again after LISTEN is back,
 * starting from an empty cache.
 */
export class ChangeListener {
  private client: pg.Client | undefined;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private backoffMs = 50;

  constructor(
    private readonly databaseUrl: string,
    private readonly cache: UserReadCache,
    private readonly log: Logger,
  ) {}

  /** Connects (resolves once LISTEN is up or the first attempt failed; retries go on behind). */
  async start(): Promise<void> {
    await this.connect();
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
      this.cache.setLive(false);
      client.removeAllListeners("notification");
      client.end().catch(() => {});
      if (this.stopped) return;
      this.log.warn({ err: error?.message }, "cache LISTEN connection lost; in-process cache off until it is back");
      this.scheduleReconnect();
    };
    client.on("error", onLost);
    client.on("end", () => onLost());
    client.on("notification", (msg) => {
      if (msg.channel === CHANGES_CHANNEL && msg.payload) this.cache.invalidate(msg.payload);
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGES_CHANNEL}`);
      if (lost || this.stopped) return;
      this.backoffMs = 50;
      this.cache.setLive(true);
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
    this.cache.setLive(false);
    const client = this.client;
    this.client = undefined;
    if (client) await client.end().catch(() => {});
  }
}
