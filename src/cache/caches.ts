import { createHash } from "node:crypto";
import type { Knex } from "knex";
import type { Logger } from "pino";
import type { CacheConfig } from "../config";
import type { Notifications } from "../db/notifications";
import type { Tx } from "../db/transaction";
import type { Job } from "../jobs/scheduler";
import type { ModelChangeListener } from "../voice-models/model-events";
import type { ModelReadCache } from "../voice-models/read-cache";
import { reviveModel, type VoiceModelRecord } from "../voice-models/voice-model";
import { createCacheStats, type CacheStats } from "./cache-stats";
import { CacheTables, invalidateInTransaction, scopes, type Codec } from "./cache-tables";
import { UserReadCache } from "./user-read-cache";

export interface CachesOptions {
  knex: Knex;
  /** Which database: on PGlite this process is the only instance, so local invalidation is all. */
  kind: "postgres" | "pglite";
  /** The instance's LISTEN connection; without it (on PostgreSQL) the in-process cache is off. */
  notifications: Notifications | undefined;
  config: Readonly<CacheConfig>;
  log: Logger;
}

/** A model as stored in a cache row, and back (dates travel as ISO strings). */
export const modelCodec: Codec<VoiceModelRecord> = {
  encode: (model) => model,
  decode: (json) => reviveModel(json as Record<string, unknown>),
};

type ListPage = { models: VoiceModelRecord[]; total: number };

const listCodec: Codec<ListPage> = {
  encode: (page) => page,
  decode: (json) => {
    const page = json as { models: Record<string, unknown>[]; total: number };
    return { models: page.models.map(reviveModel), total: page.total };
  },
};

/** A list page's weight in the in-process cache: the models it holds. */
const modelsIn = (page: ListPage) => page.models.length;

/** The NOTIFY channel writers announce changed users on (payload: the user id). */
const CHANGES_CHANNEL = "voice_model_changes";

const hash = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 32);

/**
 * Every cache of the service: the PostgreSQL cache tables, the in-process cache of active models
 * and list pages (dropped per user on the LISTEN channel), their invalidation, and the periodic
 * hit flush and expiry sweep.
 */
export class Caches {
  readonly stats: CacheStats = createCacheStats();
  readonly tables: CacheTables;
  readonly inProcess: UserReadCache;
  /** Whether other instances' changes reach this one (PostgreSQL with a LISTEN connection). */
  private readonly announces: boolean;

  constructor(private readonly options: CachesOptions) {
    this.tables = new CacheTables(options.knex, this.stats);
    const pglite = options.kind === "pglite";
    this.announces = !pglite && options.notifications !== undefined;
    const entries = pglite || this.announces ? options.config.inProcessEntries : 0;
    // On PGlite the cache is live at once; on PostgreSQL only while LISTEN is up: entries could
    // miss notifications while it is down, so the cache stops serving and starts empty again.
    this.inProcess = new UserReadCache(entries, this.stats, pglite);
    if (this.announces) {
      options.notifications!.listen(CHANGES_CHANNEL, {
        onMessage: (userId) => userId && this.inProcess.invalidate(userId),
        onLive: (live) => this.inProcess.setLive(live),
      });
    }
  }

  /** The read-through cache VoiceModelService consults for get, list and getActive. */
  readonly modelReads: ModelReadCache = {
    model: (modelId, load) =>
      this.tables.getOrLoad(
        { table: "cache_voice_models", key: `voice_model:${modelId}`, scope: scopes.model(modelId), userId: "", modelId, ttlSeconds: this.options.config.modelTtlSeconds },
        load,
        modelCodec,
        (model) => model.userId,
      ),
    // A user's list pages: in process first, then the cache table, then the database.
    list: (userId, key, load) =>
      this.inProcess.get(userId, `list:${key}`, () => this.listFromTable(userId, key, load), modelsIn),
    active: (userId, load) => this.inProcess.get(userId, "active", load),
  };

  private async listFromTable(userId: string, key: string, load: () => Promise<ListPage>): Promise<ListPage> {
    const entry = {
      table: "cache_voice_models" as const,
      key: `voice_models:user:${userId}:${hash(key)}`,
      scope: scopes.user(userId),
      userId,
      ttlSeconds: this.options.config.modelTtlSeconds,
    };
    return (await this.tables.getOrLoad(entry, load, listCodec))!;
  }

  /** Model writes: runs in the writing transaction (see VoiceModelService.onChange). */
  readonly onModelChange: ModelChangeListener = async (trx, changes) => {
    const users = new Set(changes.map((c) => c.model.userId));
    const models = new Set(changes.map((c) => c.model.id));
    this.inProcess.beginWrite(users, trx.executionPromise);
    await invalidateInTransaction(trx, {
      scopes: [...[...users].map(scopes.user), ...[...models].map(scopes.model)],
      modelUsers: users,
      analyticsUsers: users,
      statsModels: changes.filter((c) => c.kind === "deleted" || c.kind === "purged").map((c) => c.model.id),
    });
    // Delivered to the other instances' LISTEN connections when (and only if) this commits.
    if (this.announces) for (const user of users) await trx.raw(`SELECT pg_notify(?, ?)`, [CHANGES_CHANNEL, user]);
  };

  /** Usage writes: stats of the models and analytics of their owners, in the usage transaction. */
  async onUsage(trx: Tx, models: { id: string; userId: string }[]): Promise<void> {
    const users = new Set(models.map((m) => m.userId));
    await invalidateInTransaction(trx, {
      scopes: [...[...users].map(scopes.user), ...models.map((m) => scopes.model(m.id))],
      analyticsUsers: users,
      statsModels: models.map((m) => m.id),
    });
  }

  /** The periodic work of every instance: the hit-count flush (once more at stop) and the sweep of expired rows. */
  jobs(): Job[] {
    const { config } = this.options;
    return [
      { name: "cache hit flush", intervalMs: config.hitFlushIntervalMs, mode: { kind: "every-instance" }, runAtStop: true, run: () => this.tables.fillsWritten().then(() => this.tables.flushHits()) },
      { name: "cache sweep", intervalMs: config.sweepIntervalMs, mode: { kind: "every-instance" }, run: () => this.tables.sweepExpired(config.sweepBatchSize) },
    ];
  }
}
