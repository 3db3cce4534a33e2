import { Storage } from "@google-cloud/storage";
import { GcsBlobStore } from "../../src/storage/gcs-blob-store";
import { startGcsEmulator, type GcsEmulator } from "../helpers/gcs-emulator";
import { blobStoreContract } from "./blob-store-contract";

// Runs on every pass against the storage emulator on loopback: never skipped.
let emulator: GcsEmulator;
beforeAll(async () => {
  emulator = await startGcsEmulator();
});
afterAll(async () => {
  await emulator?.stop();
});

blobStoreContract("Google Cloud Storage (storage emulator on loopback)", () => {
  const storage = new Storage({ apiEndpoint: emulator.endpoint, projectId: emulator.projectId, retryOptions: { autoRetry: false } });
  return new GcsBlobStore({ bucket: storage.bucket("voice-models-test"), prefix: "contract" });
});
