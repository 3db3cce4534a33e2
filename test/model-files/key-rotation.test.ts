import { randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { createModel, sleep, startTestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";
import { masterKeyId } from "../../src/storage/key-provider";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-keys-"));
let database: TestDatabase;
beforeAll(async () => {
  database = await createTestDatabase();
});
afterAll(async () => {
  await database?.dispose();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test("rotating the master key re-wraps the data keys in the rows; files are not rewritten and stay readable", async () => {
  const oldKey = randomBytes(32);
  const newKey = randomBytes(32);
  const env = (current: Buffer, previous?: Buffer) => ({
    DATA_DIR: dataDir,
    MASTER_KEY: current.toString("base64"),
    ...(previous ? { MASTER_KEYS_PREVIOUS: previous.toString("base64") } : {}),
  });
  const body = randomBytes(100_000);
  let modelId: string;
  let user;
  let storedBefore: Buffer;
  {
    const server = await startTestServer({ database: database.db, env: env(oldKey) });
    user = await server.actor();
    modelId = (await createModel(user)).id;
    await grpcStreamingClient(server.grpcPort, user.token).uploadModelFile(
      (async function* () {
        yield { part: { case: "header" as const, value: { modelId } } };
        yield { part: { case: "chunk" as const, value: body } };
      })(),
    );
    const row = await database.db.knex("model_files").where({ user_id: user.userId }).first();
    expect(row.key_id).toBe(masterKeyId(oldKey));
    storedBefore = fs.readFileSync(path.join(dataDir, "blobs", row.storage_key));
    await server.close();
  }
  {
    const server = await startTestServer({ database: database.db, env: env(newKey, oldKey) });
    for (let i = 0; i < 100; i++) {
      const row = await database.db.knex("model_files").where({ user_id: user.userId }).first();
      if (row.key_id === masterKeyId(newKey)) break;
      await sleep(50);
    }
    await server.close();
  }
  const row = await database.db.knex("model_files").where({ user_id: user.userId }).first();
  expect(row.key_id).toBe(masterKeyId(newKey));
  expect(fs.readFileSync(path.join(dataDir, "blobs", row.storage_key)).equals(storedBefore)).toBe(true);
  {
    // The old key is gone from the configuration: the file still opens.
    const server = await startTestServer({ database: database.db, env: env(newKey) });
    const parts: Buffer[] = [];
    for await (const m of grpcStreamingClient(server.grpcPort, user.token).readModelFile({ modelId })) parts.push(Buffer.from(m.chunk));
    expect(Buffer.concat(parts).equals(body)).toBe(true);
    await server.close();
  }
});
