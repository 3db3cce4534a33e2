// ReadBackup: the stream form of GET /v1/backups/{id}, over gRPC and Connect JSON, with the same
// access rules, the same "backup.read" audit and the same refusal of a backup awaiting rewrite.
import { Code } from "@connectrpc/connect";
import { createHash, randomBytes } from "node:crypto";
import { expectRpcError } from "../helpers/expect-error";
import { createModel, TRANSPORTS, useTestServer, type Actor } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

const server = useTestServer();

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const client = (actor: Pick<Actor, "token">) => grpcStreamingClient(server().grpcPort, actor.token);

/** A user with a model holding a 1.5 MB file, and a backup of it. */
async function userWithBackup() {
  const user = await server().actor();
  const model = await createModel(user);
  const body = randomBytes(1_500_000);
  await client(user).uploadModelFile(
    (async function* () {
      yield { part: { case: "header" as const, value: { modelId: model.id } } };
      yield { part: { case: "chunk" as const, value: body } };
    })(),
  );
  let backup;
  for await (const m of client(user).createBackup({})) if (m.backup) backup = m.backup;
  return { user, backup: backup! };
}

const auditRows = (backupRequestId: string) => server().db.knex("audit_events").where({ action: "backup.read", request_id: backupRequestId });

describe.each(TRANSPORTS)("over %s", (t) => {
  test("the owner streams the same bytes as the file route, size and SHA-256 in the first message; audited backup.read", async () => {
    const { user, backup } = await userWithBackup();
    const outcome = await server().call(t, "readBackup", { backupId: backup.backupId }, user.token);
    expect(outcome.code).toBe(0);
    const messages = outcome.message as Array<{ chunk: Uint8Array; sizeBytes: bigint; sha256: string }>;
    expect(messages.length).toBeGreaterThan(1);
    expect(messages[0]).toMatchObject({ sizeBytes: backup.sizeBytes, sha256: backup.sha256 });
    expect(messages.slice(1).every((m) => m.sha256 === "" && m.sizeBytes === 0n)).toBe(true);
    const streamed = Buffer.concat(messages.map((m) => Buffer.from(m.chunk)));
    const route = await fetch(`${server().baseUrl}/v1/backups/${backup.backupId}`, { headers: { authorization: `Bearer ${user.token}` } });
    expect(route.status).toBe(200);
    expect(streamed.equals(Buffer.from(await route.arrayBuffer()))).toBe(true);
    expect(sha(streamed)).toBe(backup.sha256);
    const rows = await auditRows(outcome.requestId!);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ actor_id: user.userId, target_user_id: user.userId, result_code: "OK" });
    // Service and admin callers read any user's backup.
    const admin = await server().adminActor();
    expect((await server().call(t, "readBackup", { backupId: backup.backupId }, admin.token)).code).toBe(0);
  });

  test("another user is refused, an unknown id is BACKUP_NOT_FOUND, a malformed one names backupId", async () => {
    const { backup } = await userWithBackup();
    const mallory = await server().actor();
    const refused = await server().call(t, "readBackup", { backupId: backup.backupId }, mallory.token);
    expectRpcError(refused, { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    expect(await auditRows(refused.requestId!)).toHaveLength(0);
    // The refusal is audited as every refused access is.
    expect(await server().db.knex("audit_events").where({ action: "access.denied", request_id: refused.requestId! })).toHaveLength(1);
    expectRpcError(await server().call(t, "readBackup", { backupId: "0b9ad2c4-2c38-4c7e-9d55-5e0f6d0b8a11" }, mallory.token), { code: Code.NotFound, reason: "BACKUP_NOT_FOUND" });
    expectRpcError(await server().call(t, "readBackup", { backupId: "x" }, mallory.token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "backupId" });
    expect((await server().call(t, "readBackup", { backupId: backup.backupId })).code).toBe(Code.Unauthenticated);
  });

  test("a backup waiting for its rewrite after a withdrawal is BACKUP_REWRITE_PENDING, as the file route is", async () => {
    const { user, backup } = await userWithBackup();
    await server().db.knex("backup_rewrites").insert({ backup_id: backup.backupId, model_id: "00000000-0000-4000-8000-000000000001" });
    expectRpcError(await server().call(t, "readBackup", { backupId: backup.backupId }, user.token), {
      code: Code.FailedPrecondition,
      reason: "BACKUP_REWRITE_PENDING",
      field: "backupId",
    });
    expect((await fetch(`${server().baseUrl}/v1/backups/${backup.backupId}`, { headers: { authorization: `Bearer ${user.token}` } })).status).toBe(400);
  });
});
