import { Storage } from "@google-cloud/storage";
import { createHash, randomBytes } from "node:crypto";
import { createModel, startTestServer, type TestServer } from "../helpers/harness";
import { startGcsEmulator, type GcsEmulator } from "../helpers/gcs-emulator";
import { grpcStreamingClient } from "../helpers/streaming-client";

// The whole file path with BLOB_STORE=gcs against the storage emulator on loopback.
let emulator: GcsEmulator;
let server: TestServer;
const bucket = "voice-models-e2e";
beforeAll(async () => {
  emulator = await startGcsEmulator();
  server = await startTestServer({
    env: {
      BLOB_STORE: "gcs",
      GCS_BUCKET: bucket,
      GCS_PREFIX: "svc/",
      GCS_API_ENDPOINT: emulator.endpoint,
      GCS_PROJECT_ID: emulator.projectId,
      MASTER_KEY: randomBytes(32).toString("base64"),
      RATE_LIMIT_EXEMPT_ROLES: "admin,service,user",
    },
  });
});
afterAll(async () => {
  await server?.close();
  await emulator?.stop();
});

test("ingest, upload, ranged read, export -> import and backup -> restore work on GCS", async () => {
  const storage = new Storage({ apiEndpoint: emulator.endpoint, projectId: emulator.projectId });
  const user = await server.actor();
  const training = await server.serviceActor();
  const client = grpcStreamingClient(server.grpcPort, user.token);
  const raw = randomBytes(3_000_000);
  await storage.bucket(bucket).file(`svc/incoming/${user.userId}/job/model.pth`).save(raw);
  const ingested = await createModel(training, { userId: user.userId, modelPath: `incoming/${user.userId}/job/model.pth` });
  expect(ingested.modelPath.startsWith(`${user.userId}/${ingested.id}/`)).toBe(true);
  const [sourceExists] = await storage.bucket(bucket).file(`svc/incoming/${user.userId}/job/model.pth`).exists();
  expect(sourceExists).toBe(false);
  const [stored] = await storage.bucket(bucket).file(`svc/${ingested.modelPath}`).download();
  expect(stored.includes(raw.subarray(5000, 5064))).toBe(false);

  const parts: Buffer[] = [];
  for await (const m of client.readModelFile({ modelId: ingested.id, offset: 1_000_000n, length: 1_500_000n })) parts.push(Buffer.from(m.chunk));
  expect(Buffer.concat(parts).equals(raw.subarray(1_000_000, 2_500_000))).toBe(true);

  const exported = [];
  for await (const m of client.exportVoiceModel({ modelId: ingested.id })) exported.push({ part: m.part });
  const imported = await client.importVoiceModel(
    (async function* () {
      yield* exported;
    })(),
  );
  expect(imported.file!.deduplicated).toBe(true);
  expect(imported.file!.sha256).toBe(createHash("sha256").update(raw).digest("hex"));

  let backupPath = "";
  for await (const r of client.createBackup({})) if (r.backup) backupPath = r.backup.backupPath;
  const result = await client.restoreBackup({ backupPath: `gs://${bucket}/svc/${backupPath}` });
  expect(result).toMatchObject({ restored: 0, skipped: 2 });
});
