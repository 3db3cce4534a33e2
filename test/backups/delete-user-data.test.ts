import { Code, ConnectError } from "@connectrpc/connect";
import { createHash, randomBytes } from "node:crypto";
import { UserHasher } from "../../src/auth/user-hash";
import { ERASURE_KEY } from "../helpers/env";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createModel, useTestServer, type Actor } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-erase-"));
const blobRoot = path.join(dataDir, "blobs");
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const server = useTestServer({
  env: { DATA_DIR: dataDir, RATE_LIMIT_CREATE: "100000/3600", RATE_LIMIT_UPDATE: "100000/3600", RATE_LIMIT_BACKUP: "1000/3600" },
});

const client = (actor: Pick<Actor, "token">) => grpcStreamingClient(server().grpcPort, actor.token);

async function erase(actor: Actor, userId: string) {
  const out = [];
  for await (const m of client(actor).deleteUserData({ userId })) out.push(m);
  return out;
}

const exists = (p: string) => fs.existsSync(path.join(blobRoot, p));

test("DeleteUserData removes every row and object of the user and blocks them for good", async () => {
  const user = await server().actor();
  const bystander = await server().actor();
  const admin = await server().adminActor();
  const m1 = await createModel(user);
  const m2 = await createModel(user);
  const keep = await createModel(bystander);
  for (const [who, id] of [[user, m1.id], [user, m2.id], [bystander, keep.id]] as const) {
    await client(who).uploadModelFile(
      (async function* () {
        yield { part: { case: "header" as const, value: { modelId: id } } };
        yield { part: { case: "chunk" as const, value: randomBytes(20_000) } };
      })(),
    );
  }
  await user.grpc.deleteVoiceModel({ modelId: m2.id });
  let backupPath = "";
  for await (const r of client(user).createBackup({})) if (r.backup) backupPath = r.backup.backupPath;
  expect(exists(backupPath)).toBe(true);
  fs.mkdirSync(path.join(blobRoot, "incoming", user.userId), { recursive: true });
  fs.writeFileSync(path.join(blobRoot, "incoming", user.userId, "raw.pth"), "raw");

  const progress = await erase(admin, user.userId);
  expect(progress[progress.length - 1].status).toBe("done");
  expect(Number(progress[progress.length - 1].objectsDeleted)).toBeGreaterThanOrEqual(4);

  // Audit rows keep only a keyed hash of the id (under ERASURE_KEY), not its plain SHA-256.
  const audit = await server().db.knex("audit_events").where("actor_id", user.userId).orWhere("target_user_id", user.userId);
  expect(audit).toHaveLength(0);
  const keyed = new UserHasher(Buffer.from(ERASURE_KEY, "base64")).hash(user.userId);
  expect(await server().db.knex("audit_events").where("target_user_id", keyed).first()).toBeDefined();
  expect(await server().db.knex("audit_events").where("target_user_id", createHash("sha256").update(user.userId).digest("hex")).first()).toBeUndefined();
  // Nothing of the user can be read.
  expect((await server().call("grpc", "getVoiceModel", { modelId: m1.id }, admin.token)).code).toBe(Code.NotFound);
  expect(await server().db.knex("voice_models").where({ user_id: user.userId }).first()).toBeUndefined();
  expect(await server().db.knex("backups").where({ user_id: user.userId }).first()).toBeUndefined();
  // An admin naming them is told the user's data was deleted (the field, not the id).
  const listed = await server().call("grpc", "listVoiceModels", { userId: user.userId, showDeleted: true }, admin.token);
  expect([listed.code, listed.errorInfo?.metadata.field]).toEqual([Code.InvalidArgument, "userId"]);
  for (const folder of [user.userId, `deleted/${user.userId}`, `backups/${user.userId}`, `incoming/${user.userId}`]) {
    const dir = path.join(blobRoot, folder);
    expect(fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).filter((e) => fs.statSync(path.join(dir, String(e))).isFile()) : []).toEqual([]);
  }
  // The user's own token is refused outright ...
  for (const transport of ["grpc", "connect"] as const) {
    const refused = await server().call(transport, "listVoiceModels", {}, user.token);
    expect(refused.code).toBe(Code.Unauthenticated);
    expect(refused.errorInfo?.reason).toBe("USER_ERASED");
  }
  const restore = await client(user).restoreBackup({ backupPath }).catch((e: ConnectError) => e);
  expect((restore as ConnectError).code).toBe(Code.Unauthenticated);
  // ... and a service naming them is refused before anything is written (the database's trigger
  // refuses model, file and backup rows for them too: erasure-leaves-no-id.test.ts).
  const service = await server().serviceActor();
  expect((await server().call("grpc", "createVoiceModel", { userId: user.userId, provider: "xtts-v2", modelPath: "x" }, service.token)).code).toBe(Code.InvalidArgument);
  // Other users are untouched.
  expect((await bystander.grpc.getVoiceModel({ modelId: keep.id })).message.model!.id).toBe(keep.id);
  // Calling again reports the finished purge.
  const again = await erase(admin, user.userId);
  expect(again[again.length - 1].status).toBe("done");
});

test("only admin and service callers may delete user data", async () => {
  const user = await server().actor();
  const error = await (async () => {
    for await (const _ of client(user).deleteUserData({ userId: user.userId })) void _;
  })().catch((e: ConnectError) => e);
  expect((error as ConnectError).code).toBe(Code.PermissionDenied);
  expect((await createModel(user)).userId).toBe(user.userId);
});
