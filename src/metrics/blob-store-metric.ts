import { Gauge, type Registry } from "prom-client";
import type { BlobStoreHealth } from "../storage/blob-store-health";

/** voice_model_blob_store_up: 1 when the last blob store probe succeeded, 0 when it failed or none ran yet. */
export function registerBlobStoreMetric(registry: Registry, health: BlobStoreHealth): void {
  new Gauge({
    name: "voice_model_blob_store_up",
    help: "1 when the blob store answered its last probe, 0 when it is down (or not probed yet)",
    registers: [registry],
    collect() {
      this.set(health.state.status === "up" ? 1 : 0);
    },
  });
}
