import type { FilesConfig } from "../config";
import type { AppError } from "../errors";
import type { BlobStore } from "./blob-store";
import { FsBlobStore } from "./fs-blob-store";
import { GcsBlobStore } from "./gcs-blob-store";
import { GuardedBlobStore } from "./guarded-blob-store";
import { LocalKeyProvider, loadOrCreateMasterKeyFile, type KeyProvider, type WrappedKey } from "./key-provider";

/**
 * The configured blob store: the local folder, or a GCS bucket (credentials the usual Google way)
 * under the connect and idle timeouts, its outages reported to onUnavailable.
 */
export function openBlobStore(config: Readonly<FilesConfig>, onUnavailable?: (error: AppError) => void): BlobStore {
  if (config.blobStore === "fs") return new FsBlobStore(config.fsRoot);
  // Loaded only for a GCS store: the SDK and its auth stack add about 170 modules (several MB of
  // heap) to every process, and a server keeping its files on disk never calls them.
  const { Storage } = require("@google-cloud/storage") as typeof import("@google-cloud/storage");
  const storage = new Storage({
    ...(config.gcs.apiEndpoint ? { apiEndpoint: config.gcs.apiEndpoint } : {}),
    ...(config.gcs.projectId ? { projectId: config.gcs.projectId } : {}),
    // Per request until the reply's headers (not the body; uploads are untimed here): ends the
    // SDK's own attempts against a dead endpoint, which the guard below has already answered for.
    timeout: config.storageConnectTimeoutMs,
    // The SDK's own retries stay inside the window the guard answers in, so none outlive the call.
    retryOptions: {
      maxRetries: 2,
      maxRetryDelay: 1,
      totalTimeout: Math.ceil((config.storageConnectTimeoutMs + config.storageIdleTimeoutMs) / 1000),
    },
  });
  const gcs = new GcsBlobStore({ bucket: storage.bucket(config.gcs.bucket!), prefix: config.gcs.prefix });
  return new GuardedBlobStore(gcs, {
    connectTimeoutMs: config.storageConnectTimeoutMs,
    idleTimeoutMs: config.storageIdleTimeoutMs,
    onUnavailable,
  });
}

/**
 * The master keys, current first: the configured ones, or (embedded mode) a key file in the data
 * folder, read or created on first use so a server that never needs a key writes none.
 */
export function masterKeySource(config: Readonly<FilesConfig>, dataDir: string): () => readonly Buffer[] {
  if (config.masterKeys) {
    const keys = config.masterKeys;
    return () => keys;
  }
  let keys: readonly Buffer[] | undefined;
  return () => (keys ??= Object.freeze([loadOrCreateMasterKeyFile(dataDir)]));
}

/** Wraps data keys with the master keys of masterKeySource, loaded on first use. */
export function openKeyProvider(masterKeys: () => readonly Buffer[]): KeyProvider {
  let provider: LocalKeyProvider | undefined;
  const load = () => (provider ??= new LocalKeyProvider([...masterKeys()]));
  return {
    get currentKeyId() {
      return load().currentKeyId;
    },
    wrap: (dataKey: Buffer) => load().wrap(dataKey),
    unwrap: (key: WrappedKey) => load().unwrap(key),
  };
}
