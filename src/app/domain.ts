import type { Logger } from "pino";
import { auditModelChanges } from "../audit/audit-log";
import { BackupService } from "../backups/backup-service";
import { Caches } from "../cache/caches";
import { CleanupService } from "../cleanup/cleanup-service";
import { consentForNewModel, isRecordingKey } from "../consent/consent-repository";
import { ConsentService } from "../consent/consent-service";
import { scrubWithdrawnModels, Withdrawal } from "../consent/withdrawal";
import type { Config } from "../config";
import type { Database } from "../db/connection";
import { ServiceMetrics } from "../metrics/service-metrics";
import { FileMover } from "../model-files/file-mover";
import { ChunkedUploads } from "../model-files/chunked-upload";
import { ModelFileService } from "../model-files/model-file-service";
import { isStagedKey } from "../model-files/upload-session-repository";
import { Retention } from "../model-files/retention";
import { PageTokens } from "../paging/page-token";
import { Notifications } from "../db/notifications";
import { EventFeed } from "../events/event-feed";
import { EventOutbox, EVENTS_CHANNEL } from "../events/event-outbox";
import { EventService } from "../events/event-service";
import { findPermission, sharedModelIds } from "../sharing/share-repository";
import { endSharesOfDeletedModels, SharingService } from "../sharing/sharing-service";
import { BlobStoreHealth } from "../storage/blob-store-health";
import { masterKeySource, openBlobStore, openKeyProvider } from "../storage/open-storage";
import { SealedStore } from "../storage/sealed-store";
import { SelectionService } from "../usage/selection";
import { UsageService } from "../usage/usage-service";
import { ERASURE_KEY_SETTING, loadErasureKey, UserHasher } from "../auth/user-hash";
import { setTransactionSetting } from "../db/transaction";
import { ErasedUsers } from "../user-data/erased-users";
import { UserErasure } from "../user-data/user-erasure";
import { NO_SHARES, SharedAccess } from "../voice-models/access";
import { ActivationHistoryService } from "../voice-models/activation-history-service";
import { VoiceModelService } from "../voice-models/voice-model-service";

/** Every room of the domain, wired to its stores and to the change listeners of the others. */
export function buildDomain({ config, db, log }: { config: Readonly<Config>; db: Database; log: Logger }) {
  const governance = config.governance;
  const metrics = new ServiceMetrics(db.knex, { storageQuotaBytes: governance.alerts.storageQuotaBytes });
  // The instance's one LISTEN connection (PostgreSQL only: on PGlite this process is the only instance).
  const notifications = db.kind === "postgres" && config.databaseListenUrl ? new Notifications(config.databaseListenUrl, log) : undefined;
  // Cache tables + the in-process cache (active models, list pages); caches.stats holds the hit/miss counters.
  const caches = new Caches({ knex: db.knex, kind: db.kind, notifications, config: config.cache, log });
  // Change events: written by the writes (outbox), read by one feed per instance that the
  // commits wake (here directly, elsewhere through NOTIFY; after a lost LISTEN, a read catches up).
  const feed = new EventFeed(db.knex, log);
  notifications?.listen(EVENTS_CHANNEL, { onMessage: feed.wake, onLive: (live) => live && feed.wake() });
  const outbox = new EventOutbox(notifications !== undefined, feed.wake);
  metrics.setCacheStatsSource(() => ({ ...caches.stats.tables, in_process: caches.stats.inProcess }));
  // One master key source for file encryption and page tokens (each derives keys of its own).
  const masterKeys = masterKeySource(config.files, config.dataDir);
  const pageTokens = new PageTokens(masterKeys);
  const models = new VoiceModelService(db.knex, {
    pageTokens,
    reads: caches.modelReads,
    access: new SharedAccess(governance.sharingEnabled ? findPermission : NO_SHARES),
    consentRequired: governance.consentRequired,
    consentForNewModel,
  });
  models.onChange(caches.onModelChange);
  models.onChange(auditModelChanges);
  models.onChange(endSharesOfDeletedModels(outbox));
  models.onChange(metrics.onModelChanges);
  const history = new ActivationHistoryService(db.knex, models, pageTokens);
  // After the audit and caches, before the outbox: a withdrawn model's traces go.
  models.onChange(scrubWithdrawnModels);
  // Last: from its insert to commit it holds the lock that keeps event ids in commit order.
  models.onChange(outbox.onModelChange);
  const cleanup = new CleanupService(db.knex, governance.cleanup, metrics, (actor, fn) => models.write(actor, fn));
  const usage = new UsageService(db.knex, caches, { ...config.usage, ...config.cache }, models.access);

  // Model files: sealed (encrypted, compressed) objects in the configured blob store. The blob
  // store's own health is a cached probe (/readyz's body, gRPC health, a metric); a call that
  // finds the store down marks it down at once (only a probe marks it up again).
  const blobs = openBlobStore(config.files, (error) => storageHealth.markDown(error));
  const storageHealth = new BlobStoreHealth(blobs, config.files.storageProbeIntervalMs, log);
  const mover = new FileMover(db.knex, blobs, log);
  mover.listenTo(models);
  const kickMover = () => mover.kick();
  const keyProvider = openKeyProvider(masterKeys);
  const files = new ModelFileService({ knex: db.knex, models, sealed: new SealedStore(blobs, keyProvider), maxFileBytes: config.files.maxFileBytes, kickMover });
  const uploads = new ChunkedUploads({ knex: db.knex, files, expiryMs: config.files.uploadExpiryMs });
  const retention = new Retention({
    knex: db.knex,
    models,
    blobs,
    retentionDays: config.files.retentionDays,
    orphanGraceMs: config.files.orphanGraceMs,
    log,
    kickMover,
    // Consent recordings, and the staged chunks of open upload sessions.
    referencedElsewhere: async (key) => (await isRecordingKey(db.knex, key)) || (await isStagedKey(db.knex, key)),
  });
  const { bucket, prefix } = config.files.gcs;
  const backups = new BackupService({
    knex: db.knex,
    models,
    files,
    pathPrefixes: bucket ? [`gs://${bucket}/${prefix}`, `gs://${bucket}/`] : [],
    pageTokens,
  });
  // Erasure's keyed hashes; the key also reaches the database's trigger in every writing transaction.
  const hasher = new UserHasher(loadErasureKey(config.erasureKey, config.dataDir));
  if (db.kind === "postgres" && !config.erasureKey) {
    // Instances that do not share the data folder would each make a key: all but the first refuse to start.
    log.warn({ file: `${config.dataDir}/erasure-key` }, "ERASURE_KEY is unset: the erasure key is the data folder's file; set ERASURE_KEY on every instance");
  }
  setTransactionSetting(db.knex, ERASURE_KEY_SETTING, hasher.sqlKey);
  const erasedUsers = new ErasedUsers(db.knex, hasher, notifications);
  const erasure = new UserErasure(db.knex, models, blobs, log, outbox, hasher, erasedUsers);
  const sharing = new SharingService(db.knex, governance.sharingEnabled, pageTokens, outbox);
  const events = new EventService({
    knex: db.knex,
    feed,
    sharedModelIds: (userId) => sharedModelIds(db.knex, userId),
    userHash: erasure.userHash,
    heartbeatMs: config.events.heartbeatMs,
    retentionHours: config.events.retentionHours,
  });
  const selection = new SelectionService(db.knex, models, caches.modelReads);
  const withdrawal = new Withdrawal({ knex: db.knex, models, blobs, events: outbox, backups, log });
  const consents = new ConsentService({
    knex: db.knex,
    models,
    sealed: files.sealed,
    pageTokens,
    maxRecordingBytes: config.files.maxFileBytes,
    withdrawal,
  });
  return { notifications, feed, events, metrics, caches, pageTokens, models, history, cleanup, usage, blobs, storageHealth, mover, keyProvider, files, uploads, retention, backups, erasure, erasedUsers, sharing, selection, consents };
}

export type Domain = ReturnType<typeof buildDomain>;
