// DeleteUserData leaves no identifier: after it, neither the user's id nor its plain SHA-256
// appears in any object key, any sealed object's plaintext, any text column of any table or the
// server's log; the erased user's tokens are refused (USER_ERASED) without writing the id anywhere.
import { Code } from "@connectrpc/connect";
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadErasureKey, UserHasher } from "../../src/auth/user-hash";
import { openDatabase, type Database } from "../../src/db/connection";
import { migrateToLatest } from "../../src/db/migrate";
import { loadOrCreateMasterKeyFile, LocalKeyProvider } from "../../src/storage/key-provider";
import { SealedStore } from "../../src/storage/sealed-store";
import { FsBlobStore } from "../../src/storage/fs-blob-store";
import { createModel, startTestServer, uniqueUser, useTestServer, type Actor, type TestServer } from "../helpers/harness";
import { createPostgresDatabase } from "../helpers/database";
import { describeOnPostgres } from "../helpers/env";
import { grpcStreamingClient } from "../helpers/streaming-client";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-erase-scan-"));
const blobRoot = path.join(dataDir, "blobs");
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const server = useTestServer({
  // Creates are limited to 3 an hour so the victim's fourth is refused (a rate.limited row).
  // ERASURE_KEY unset: the key is the data folder's file, as on the embedded default.
  env: { DATA_DIR: dataDir, ERASURE_KEY: undefined, LOG_LEVEL: "debug", RATE_LIMITS_ENABLED: "true", RATE_LIMIT_CREATE: "3/3600", RATE_LIMIT_BACKUP: "100/3600" },
  captureLogs: true,
});

const sha256 = (text: string) => createHash("sha256").update(text, "utf8").digest("hex");
const hasher = () => new UserHasher(loadErasureKey(undefined, dataDir));
const client = (actor: Pick<Actor, "token">) => grpcStreamingClient(server().grpcPort, actor.token);

async function erase(admin: Actor, userId: string) {
  const out = [];
  for await (const m of client(admin).deleteUserData({ userId })) out.push(m);
  return out;
}

async function upload(actor: Actor, modelId: string) {
  await client(actor).uploadModelFile(
    (async function* () {
      yield { part: { case: "header" as const, value: { modelId } } };
      // The owner's id inside the file: the scan must find it there (it decrypts what it reads).
      yield { part: { case: "chunk" as const, value: Buffer.concat([randomBytes(5_000), Buffer.from(actor.userId)]) } };
    })(),
  );
}

const count = async (query: { count(c: string): { first(): Promise<unknown> } }) => Number(((await query.count("* as n").first()) as { n: unknown }).n);

const filesUnder = (dir: string): string[] =>
  fs.existsSync(dir) ? (fs.readdirSync(dir, { recursive: true }) as string[]).filter((e) => fs.statSync(path.join(dir, e)).isFile()) : [];

/** Where the needles appear: object keys, sealed objects' plaintext, text columns, the log. */
async function findNeedles(db: Database, needles: string[], log: string): Promise<string[]> {
  const found: string[] = [];
  const knex = db.knex;
  // Every object: its key, and its plaintext (decrypted through its row) or its raw bytes.
  const sealed = new SealedStore(new FsBlobStore(blobRoot), new LocalKeyProvider([loadOrCreateMasterKeyFile(dataDir)]));
  for (const key of filesUnder(blobRoot).map((f) => f.split(path.sep).join("/"))) {
    for (const needle of needles) if (key.includes(needle)) found.push(`object key ${key}`);
    const row =
      (await knex("model_files").where({ storage_key: key }).first("key_id", "wrapped_key")) ??
      (await knex("backups").where({ storage_key: key }).first("key_id", "wrapped_key"));
    let content: Buffer;
    if (row) {
      const parts: Buffer[] = [];
      for await (const part of await sealed.read({ key, keyId: row.key_id, wrapped: row.wrapped_key })) parts.push(part);
      content = Buffer.concat(parts);
    } else {
      content = fs.readFileSync(path.join(blobRoot, key));
    }
    for (const needle of needles) if (content.includes(needle)) found.push(`object ${key} (${row ? "plaintext" : "raw"})`);
  }
  // Every text, varchar, json/jsonb and array column of every table.
  const { rows: columns } = await knex.raw(
    `SELECT c.table_name, c.column_name FROM information_schema.columns c
       JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
      WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
        AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'ARRAY')`,
  );
  expect(columns.length).toBeGreaterThan(20);
  for (const { table_name: table, column_name: column } of columns as Array<{ table_name: string; column_name: string }>) {
    for (const needle of needles) {
      const { rows } = await knex.raw(`SELECT count(*)::int AS n FROM "${table}" WHERE "${column}"::text LIKE '%' || ? || '%'`, [needle]);
      if (rows[0].n > 0) found.push(`${table}.${column} (${rows[0].n} rows)`);
    }
  }
  for (const needle of needles) if (log.includes(needle)) found.push(`log: ${log.split("\n").find((l) => l.includes(needle))}`);
  return found;
}

describe("after DeleteUserData", () => {
  let victim: Actor;
  let bystander: Actor;
  let admin: Actor;
  let service: Actor;
  let theirs: string;
  let uploadId: string;

  beforeAll(async () => {
    victim = await server().actor(uniqueUser("victim"));
    bystander = await server().actor(uniqueUser("bystander"));
    admin = await server().adminActor();
    service = await server().serviceActor();
    const m1 = await createModel(victim);
    const m2 = await createModel(victim);
    const keep = await createModel(bystander);
    theirs = keep.id;
    for (const [who, id] of [[victim, m1.id], [victim, m2.id], [bystander, keep.id]] as const) await upload(who, id);
    // An unfinished chunked upload: its session row (user ids) and staged object (under the user's folder) must go too.
    const staged = Buffer.concat([randomBytes(2_000), Buffer.from(victim.userId)]);
    const started = await victim.grpc.startModelFileUpload({ modelId: m1.id, sizeBytes: BigInt(staged.length + 10), sha256: createHash("sha256").update(staged).digest("hex") });
    uploadId = started.message.uploadId;
    await victim.grpc.appendModelFileUpload({ uploadId, offset: 0n, data: staged });
    await service.grpc.updateVoiceModel({ modelId: m1.id, status: "completed" });
    await service.grpc.updateVoiceModel({ modelId: keep.id, status: "completed" });
    // Shares both ways (share.granted rows name the targets), and one revoked.
    await victim.grpc.shareVoiceModel({ modelId: m1.id, targetUserIds: [bystander.userId], permissions: ["use"] });
    await bystander.grpc.shareVoiceModel({ modelId: keep.id, targetUserIds: [victim.userId], permissions: ["use"] });
    await victim.grpc.revokeShare({ modelId: m1.id, targetUserIds: [bystander.userId] });
    await victim.grpc.shareVoiceModel({ modelId: m1.id, targetUserIds: [bystander.userId], permissions: ["view"] });
    // Usage: the victim's own model, and the bystander's model used by the victim (kept, hashed).
    for (const [modelId, key] of [[m1.id, "own"], [keep.id, "shared"]]) {
      await service.grpc.recordUsage({ modelId, userId: victim.userId, characters: 10n, latencyMs: 5, cost: 1, idempotencyKey: `${key}-${modelId}` });
    }
    await victim.grpc.deleteVoiceModel({ modelId: m2.id });
    for await (const _ of client(victim).createBackup({})) void _;
    // The bystander's backup stays: a sealed object the scan decrypts (its manifest names them).
    for await (const _ of client(bystander).createBackup({})) void _;
    // Refusals that audit: access.denied naming the other user each way, rate.limited naming the victim.
    expect((await server().call("grpc", "getActiveVoiceModel", { userId: bystander.userId }, victim.token)).code).toBe(Code.PermissionDenied);
    expect((await server().call("connect", "listVoiceModels", { userId: victim.userId }, bystander.token)).code).toBe(Code.PermissionDenied);
    let limited = await server().call("grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "m/x.pth" }, victim.token);
    for (let i = 0; i < 3 && limited.code === 0; i++) limited = await server().call("grpc", "createVoiceModel", { provider: "xtts-v2", modelPath: "m/x.pth" }, victim.token);
    expect(limited.code).toBe(Code.ResourceExhausted);
    const denied = await server().db.knex("audit_events").whereIn("action", ["access.denied", "rate.limited", "share.granted"]);
    // Before erasure too, no user id sits in details text: the ids are in user_ids.
    expect(denied.length).toBeGreaterThanOrEqual(5);
    for (const row of denied) expect(JSON.stringify(row.details)).not.toMatch(/victim-|bystander-/);
    // ... and reading them back fills the ids in.
    const { message } = await admin.grpc.listAuditEvents({ action: "rate.limited", limit: 10 });
    expect(JSON.stringify(message.events.map((e) => e.details))).toContain(victim.userId);

    // A row written before user ids were kept apart (user_ids NULL) names the victim in its text.
    await server().db.knex("audit_events").insert({
      action: "access.denied",
      actor_id: bystander.userId,
      target_user_id: victim.userId,
      user_ids: null,
      details: JSON.stringify({ message: `caller may not act for user ${victim.userId}`, targetUserIds: [victim.userId, bystander.userId], note: `user ${victim.userId}: done.` }),
    });

    const progress = await erase(admin, victim.userId);
    expect(progress[progress.length - 1].status).toBe("done");
  });

  test("neither the id nor its SHA-256 is in any object, column or log line", async () => {
    expect(await findNeedles(server().db, [victim.userId, sha256(victim.userId)], server().logs())).toEqual([]);
    // The rows are still there, with the keyed hash in place of the id.
    const hash = hasher().hash(victim.userId);
    expect(await server().db.knex("audit_events").where("actor_id", hash).first()).toBeDefined();
    expect(await server().db.knex("audit_events").whereRaw("user_ids @> ARRAY[?]::varchar[]", [hash]).first()).toBeDefined();
    expect(await server().db.knex("usage_events").where({ user_id: hash, model_id: theirs }).first()).toBeDefined();
    expect(await server().db.knex("user_tombstones").where({ user_hash: hash, keyed: true }).first()).toBeDefined();
    expect(await server().db.knex("model_file_uploads").where({ id: uploadId }).first()).toBeUndefined();
    expect(await server().db.knex("model_file_upload_chunks").where({ upload_id: uploadId }).first()).toBeUndefined();
    const legacy = await server().db.knex("audit_events").whereNull("user_ids").where({ target_user_id: hash }).first();
    expect(legacy.details).toEqual({ message: `caller may not act for user ${hash}`, targetUserIds: [hash, bystander.userId], note: `user ${hash}: done.` });
    // The scan finds what is there: the bystander's rows, their sealed file's plaintext, the log.
    const bystanderFound = await findNeedles(server().db, [bystander.userId], server().logs());
    expect(bystanderFound).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^object bystander-.* \(plaintext\)$/),
        expect.stringMatching(/^object backups\/bystander-.* \(plaintext\)$/),
        expect.stringMatching(/^audit_events\.user_ids/),
      ]),
    );
    // (The log is captured: the service logs little per call, none of it ids.)
    expect(server().logs()).toContain('"msg"');
  });

  test("the erased user's tokens are refused, and the scan stays clean", async () => {
    for (const transport of ["grpc", "connect"] as const) {
      for (const [method, request] of [
        ["getActiveVoiceModel", {}],
        ["createVoiceModel", { provider: "xtts-v2", modelPath: "m/y.pth" }],
        ["getActiveVoiceModel", { userId: bystander.userId }],
        ["listAuditEvents", {}],
      ] as const) {
        const outcome = await server().call(transport, method, request, victim.token);
        expect(outcome.code).toBe(Code.Unauthenticated);
        expect(outcome.errorInfo?.reason).toBe("USER_ERASED");
        expect(outcome.errorMessage).not.toContain(victim.userId);
      }
    }
    const file = await server().fetch(`/v1/voice-models/${theirs}/file`, { token: victim.token });
    expect(file.status).toBe(401);
    expect(await findNeedles(server().db, [victim.userId, sha256(victim.userId)], server().logs())).toEqual([]);
  });

  test("calls naming the erased user write no id: a service's are refused, a user's refusal is audited with the hash", async () => {
    for (const [method, request, field] of [
      ["createVoiceModel", { userId: victim.userId, provider: "xtts-v2", modelPath: "m/z.pth" }, "userId"],
      ["recordUsage", { modelId: theirs, userId: victim.userId, characters: 5n, latencyMs: 1, cost: 0, idempotencyKey: "after" }, "userId"],
      ["getActiveVoiceModel", { userId: victim.userId }, "userId"],
      ["shareVoiceModel", { ownerId: bystander.userId, modelId: theirs, targetUserIds: [victim.userId], permissions: ["view"] }, "targetUserIds"],
    ] as const) {
      const outcome = await server().call("grpc", method, request, service.token);
      expect(outcome.code).toBe(Code.InvalidArgument);
      expect(outcome.errorInfo?.metadata.field).toBe(field);
      expect(outcome.errorMessage).not.toContain(victim.userId);
    }
    // A user naming them is refused as before (nothing tells them the user was erased); the
    // access.denied row holds the erasure hash.
    const before = await count(server().db.knex("audit_events").where({ action: "access.denied" }));
    expect((await server().call("connect", "listVoiceModels", { userId: victim.userId }, bystander.token)).code).toBe(Code.PermissionDenied);
    expect(await count(server().db.knex("audit_events").where({ action: "access.denied" }))).toBe(before + 1);
    expect(await findNeedles(server().db, [victim.userId, sha256(victim.userId)], server().logs())).toEqual([]);
  });

  test("the tombstone, found by the keyed hash, reports the finished purge", async () => {
    const again = await erase(admin, victim.userId);
    expect(again[again.length - 1].status).toBe("done");
    expect(await count(server().db.knex("user_tombstones"))).toBe(1);
  });

  test("the database's trigger refuses a write for the erased user, and one without the key once anyone was erased", async () => {
    const knex = server().db.knex;
    const row = (userId: string) => ({ user_id: userId, provider: "xtts-v2", model_path: "p" });
    await expect(
      knex.transaction(async (trx) => {
        await trx.raw(`SELECT set_config('voice_model.erasure_key', ?, true)`, [hasher().sqlKey]);
        await trx("model_owners").insert({ user_id: victim.userId });
        await trx("voice_models").insert(row(victim.userId));
      }),
    ).rejects.toMatchObject({ code: "VM001" });
    await expect(knex("voice_models").insert(row(uniqueUser()))).rejects.toMatchObject({ code: "VM002" });
  });
});

test("a short user id inside other text (model ids, method names) is left alone, before and after erasure", async () => {
  const admin = await server().adminActor();
  // Two characters that occur in model ids, and an id that ends a message with a ':' after it.
  const short = await server().actor("e5");
  const models = await Promise.all([0, 1, 2].map(() => createModel(short)));
  expect((await server().call("grpc", "getActiveVoiceModel", { userId: "someone-else" }, short.token)).code).toBe(Code.PermissionDenied);
  const read = async () => (await admin.grpc.listAuditEvents({ userId: short.userId, limit: 100 })).message.events;
  const before = await read();
  expect(before.filter((e) => e.action === "model.created").map((e) => (e.details as any).changes[0].modelId).sort()).toEqual(models.map((m) => m.id).sort());
  expect(before.find((e) => e.action === "access.denied")!.details).toMatchObject({ method: "voicemodel.v1.VoiceModelService/GetActiveVoiceModel" });
  await erase(admin, short.userId);
  const hash = hasher().hash(short.userId);
  const after = (await admin.grpc.listAuditEvents({ userId: hash, limit: 100 })).message.events;
  expect(after.filter((e) => e.action === "model.created").map((e) => (e.details as any).changes[0].modelId).sort()).toEqual(models.map((m) => m.id).sort());
  expect(JSON.stringify(after.map((e) => e.details))).not.toMatch(/\be5\b/);
});

describe("erasures hashed before hashes were keyed", () => {
  test("are converted at start-up, once, wherever the old hash was written", async () => {
    const knex = server().db.knex;
    const oldUser = uniqueUser("erased-long-ago");
    const old = sha256(oldUser);
    const adminHash = sha256("ops-admin");
    const owner = await server().actor();
    const model = await createModel(owner);
    await knex("user_tombstones").insert({ user_hash: old, status: "done", requested_by_hash: adminHash, keyed: false, objects_deleted: 3 });
    await knex("user_purge_keys").insert({ user_hash: old, storage_key: `left/${randomBytes(4).toString("hex")}` });
    await knex("audit_events").insert([
      { action: "model.created", actor_id: old, target_user_id: old, user_ids: null, details: "{}" },
      { action: "usage.recorded", actor_id: "training-service", target_user_id: old, user_ids: null, details: "{}" },
      // Written before ids were kept apart, erased back then: the id is still in the text.
      {
        action: "share.granted",
        actor_id: owner.userId,
        target_user_id: owner.userId,
        user_ids: null,
        details: JSON.stringify({ targetUserIds: [oldUser, "someone"], message: `rate limit for create exceeded for user ${oldUser}: 5 per 3600 s` }),
      },
    ]);
    await knex("usage_events").insert({ model_id: model.id, user_id: old, idempotency_key: `k-${old.slice(0, 8)}`, payload_hash: "x", latency_ms: 1, cost: 0, used_at: new Date() });
    await knex("voice_model_events").insert([
      { type: "erased", user_id: old },
      { type: "shared", user_id: owner.userId, model_id: model.id, audience: [old, "someone"] },
    ]);

    // A second instance starts on the same database (and data folder, so the same key).
    const second = await startTestServer({ database: server().db, env: { DATA_DIR: dataDir, ERASURE_KEY: undefined } });
    let third: TestServer | undefined;
    try {
      const keyed = hasher().hash(oldUser);
      expect(keyed).toBe(hasher().rehash(old));
      expect(await knex("user_tombstones").where({ user_hash: keyed }).first()).toMatchObject({ keyed: true, requested_by_hash: hasher().rehash(adminHash) });
      expect(await count(knex("user_purge_keys").where({ user_hash: keyed }))).toBe(1);
      expect(await count(knex("audit_events").where({ target_user_id: keyed }))).toBe(2);
      expect(await count(knex("audit_events").where({ actor_id: keyed }))).toBe(1);
      expect(await count(knex("usage_events").where({ user_id: keyed }))).toBe(1);
      expect(await count(knex("voice_model_events").where({ user_id: keyed }))).toBe(1);
      expect(await count(knex("voice_model_events").whereRaw("audience @> ARRAY[?]::varchar[]", [keyed]))).toBe(1);
      expect(await findNeedles(server().db, [old, oldUser], "")).toEqual([]);
      const legacy = await knex("audit_events").where({ action: "share.granted", actor_id: owner.userId }).first();
      expect(legacy.details).toEqual({ targetUserIds: [keyed, "someone"], message: `rate limit for create exceeded for user ${keyed}: 5 per 3600 s` });
      // Lookups by the keyed hash work: the old user's token is refused, a re-create too.
      const token = (await second.actor(oldUser)).token;
      expect((await second.call("grpc", "getActiveVoiceModel", {}, token)).errorInfo?.reason).toBe("USER_ERASED");
      const service = await second.serviceActor();
      expect((await second.call("grpc", "createVoiceModel", { userId: oldUser, provider: "xtts-v2", modelPath: "m/q.pth" }, service.token)).code).toBe(Code.InvalidArgument);
      // The database's trigger, with the key, finds the converted tombstone too.
      await expect(
        knex.transaction(async (trx) => {
          await trx.raw(`SELECT set_config('voice_model.erasure_key', ?, true)`, [hasher().sqlKey]);
          await trx("model_owners").insert({ user_id: oldUser });
          await trx("voice_models").insert({ user_id: oldUser, provider: "xtts-v2", model_path: "p" });
        }),
      ).rejects.toMatchObject({ code: "VM001" });
      // Another start converts nothing again.
      third = await startTestServer({ database: server().db, env: { DATA_DIR: dataDir, ERASURE_KEY: undefined } });
      expect(await knex("user_tombstones").where({ user_hash: keyed }).first()).toMatchObject({ keyed: true });
      expect(await count(knex("audit_events").where({ target_user_id: keyed }))).toBe(2);
    } finally {
      await third?.close();
      await second.close();
    }
  });

  test("an instance with another erasure key refuses to start", async () => {
    const other = randomBytes(32).toString("base64");
    await expect(startTestServer({ database: server().db, env: { DATA_DIR: dataDir, ERASURE_KEY: other } })).rejects.toThrow(/erasure key/);
  });
});

describeOnPostgres("two instances on one PostgreSQL", () => {
  test("an erasure on one makes the other refuse the user's tokens too (told by NOTIFY)", async () => {
    const database = await createPostgresDatabase();
    const migrating = await openDatabase({ url: database.url });
    await migrateToLatest(migrating.knex).finally(() => migrating.close());
    const env = { DATABASE_URL: database.url, DATABASE_LISTEN_URL: database.url, DATA_DIR: dataDir, ERASURE_KEY: undefined };
    const [a, b] = [await startTestServer({ databaseUrl: database.url, env }), await startTestServer({ databaseUrl: database.url, env })];
    try {
      const victim = await b.actor(uniqueUser("victim"));
      await createModel(victim);
      expect((await b.call("grpc", "getActiveVoiceModel", {}, victim.token)).code).toBe(0);
      const admin = await a.adminActor();
      for await (const _ of grpcStreamingClient(a.grpcPort, admin.token).deleteUserData({ userId: victim.userId })) void _;
      const deadline = Date.now() + 10_000;
      let outcome = await b.call("grpc", "getActiveVoiceModel", {}, victim.token);
      while (outcome.code === 0 && Date.now() < deadline) {
        await new Promise((resolve) => setImmediate(resolve));
        outcome = await b.call("grpc", "getActiveVoiceModel", {}, victim.token);
      }
      expect(outcome.errorInfo?.reason).toBe("USER_ERASED");
    } finally {
      await a.close();
      await b.close();
      await database.drop();
    }
  });
});
