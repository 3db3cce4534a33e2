import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";

/**
 * A real GCS-protocol server on loopback: firebase-tools' storage emulator (JSON API, uploads,
 * ranged downloads, list, copy, move, delete), started in-process without its security-rules
 * runtime (which needs Java): the gcloud API it serves uses the admin layer, which skips rules.
 * It reaches into firebase-tools internals, so package.json pins firebase-tools exactly.
 */
export interface GcsEmulator {
  /** http://127.0.0.1:<port>: the apiEndpoint for @google-cloud/storage. */
  endpoint: string;
  projectId: string;
  stop(): Promise<void>;
}

export async function startGcsEmulator(): Promise<GcsEmulator> {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { StorageEmulator } = require("firebase-tools/lib/emulator/storage/index.js");
  const { createApp } = require("firebase-tools/lib/emulator/storage/server.js");
  const { EmulatorRegistry } = require("firebase-tools/lib/emulator/registry.js");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-gcs-emulator-"));
  // Its persistence folder defaults to one shared tmp path: give each instance its own.
  class IsolatedEmulator extends StorageEmulator {
    getPersistenceTmpDir() {
      return dir;
    }
  }
  const projectId = "demo-voice-models";
  const emulator = new (IsolatedEmulator as new (args: object) => any)({ projectId, host: "127.0.0.1", port: 0, rules: [], auto_download: false });
  const app = await createApp(projectId, emulator);
  // The emulator routes copy/rewrite only without the "/storage/v1" prefix the client sends.
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith("/storage/v1/b/") && /\/o\/[^/]+\/(rewriteTo|copyTo)\//.test(req.url)) {
      req.url = req.url.slice("/storage/v1".length);
    }
    app(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  // Bucket metadata asks the registry for the emulator's address.
  emulator.args.port = port;
  EmulatorRegistry.set("storage", emulator);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    projectId,
    async stop() {
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
