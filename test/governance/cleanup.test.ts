import { Code } from "@connectrpc/connect";
import { randomUUID } from "node:crypto";
import { CleanupService } from "../../src/cleanup/cleanup-service";
import { parseConfig } from "../../src/config";
import { describeOnPostgres } from "../helpers/env";
import { expectRpcError } from "../helpers/expect-error";
import { uniqueUser, useTestServer } from "../helpers/harness";
import { mintToken } from "../helpers/tokens";

const server = useTestServer();
const DAY = 86_400_000;
const rules = parseConfig({}).governance.cleanup;

interface Seed {
  ageMs: number;
  quality?: number;
  active?: boolean;
  lastUsedAgoMs?: number;
  deleted?: boolean;
  sharedWith?: string;
}

/** Inserts one model with exact timestamps relative to `now` (the injected clock). */
async function seed(now: Date, s: Seed): Promise<string> {
  const knex = server().db.knex;
  const userId = uniqueUser("clean");
  const id = randomUUID();
  await knex("model_owners").insert({ user_id: userId });
  await knex("voice_models").insert({
    id,
    user_id: userId,
    provider: "xtts-v2",
    model_path: `m/${id}`,
    quality_score: s.quality ?? 0.3,
    is_active: s.active ?? false,
    created_at: new Date(now.getTime() - s.ageMs),
    deleted_at: s.deleted ? now : null,
  });
  if (s.lastUsedAgoMs !== undefined) {
    await knex("usage_totals").insert({ model_id: id, usage_count: 1, last_used_at: new Date(now.getTime() - s.lastUsedAgoMs) });
  }
  if (s.sharedWith) await knex("model_shares").insert({ model_id: id, owner_id: userId, target_user_id: s.sharedWith, permission: "view" });
  return id;
}

describe("eligibility boundaries (injected clock)", () => {
  const now = new Date("2031-03-15T12:00:00.000Z");
  const old = 180 * DAY + 1;
  const cases: Array<[string, Seed, boolean]> = [
    ["all criteria hold", { ageMs: old }, true],
    ["exactly 180 days old is not older than 180 days", { ageMs: 180 * DAY }, false],
    ["one millisecond past 180 days", { ageMs: 180 * DAY + 1 }, true],
    ["active", { ageMs: old, active: true }, false],
    ["quality exactly 0.5", { ageMs: old, quality: 0.5 }, false],
    ["quality 0.499", { ageMs: old, quality: 0.499 }, true],
    ["used 29 days ago", { ageMs: old, lastUsedAgoMs: 29 * DAY }, false],
    ["used exactly 30 days ago", { ageMs: old, lastUsedAgoMs: 30 * DAY }, false],
    ["used 31 days ago", { ageMs: old, lastUsedAgoMs: 31 * DAY }, true],
    ["shared", { ageMs: old, sharedWith: "friend" }, false],
    ["already deleted", { ageMs: old, deleted: true }, false],
  ];
  const ids = new Map<string, string>();
  let eligible: Set<string>;

  beforeAll(async () => {
    for (const [name, s] of cases) ids.set(name, await seed(now, s));
    const service = new CleanupService(server().db.knex, rules, undefined, undefined, () => now);
    const result = await service.run({ dryRun: true, trigger: "manual", holder: "test" });
    eligible = new Set(result.models.map((m) => m.model.id));
  });

  test.each(cases)("%s", (name, _seed, expected) => {
    expect(eligible.has(ids.get(name)!)).toBe(expected);
  });

  test("shared models are cleaned when configured", async () => {
    const service = new CleanupService(server().db.knex, { ...rules, includeShared: true }, undefined, undefined, () => now);
    const result = await service.run({ dryRun: true, trigger: "manual", holder: "test" });
    expect(result.models.map((m) => m.model.id)).toContain(ids.get("shared"));
  });
});

describe("CleanupExpiredModels and ListExpiringModels", () => {
  test("dry run lists and changes nothing; a real run soft-deletes in batches and reports counts", async () => {
    const admin = await server().adminActor();
    // Everything the earlier tests left eligible under the real clock goes first.
    await admin.grpc.cleanupExpiredModels({ dryRun: false });
    const now = new Date();
    const mine = await Promise.all(Array.from({ length: 5 }, () => seed(now, { ageMs: 200 * DAY })));
    const keep = await seed(now, { ageMs: 200 * DAY, quality: 0.9 });

    const dry = (await admin.grpc.cleanupExpiredModels({ dryRun: true })).message;
    expect(dry.eligibleCount).toBe(5);
    expect(dry.cleanedCount).toBe(0);
    expect(dry.models.map((m) => m.model!.id).sort()).toEqual([...mine].sort());
    expect(dry.models[0].reasons).toEqual(["older than 180 days", "not active", "quality 0.300 below 0.500", "never used"]);
    expect(await server().db.knex("voice_models").whereIn("id", mine).whereNotNull("deleted_at")).toEqual([]);

    const run = (await admin.connect.cleanupExpiredModels({ dryRun: false, batchSize: 2 }));
    expect({ eligible: run.eligibleCount, cleaned: run.cleanedCount, batches: run.batches }).toEqual({ eligible: 5, cleaned: 5, batches: 3 });
    expect(await server().db.knex("voice_models").whereIn("id", mine).whereNull("deleted_at")).toEqual([]);
    expect(await server().db.knex("voice_models").where("id", keep).whereNull("deleted_at")).toHaveLength(1);

    const audit = (await admin.grpc.listAuditEvents({ action: "cleanup.run" })).message.events[0];
    expect(audit.details).toMatchObject({ eligible: 5, cleaned: 5, batches: 3 });
    const runs = await server().db.knex("cleanup_runs").orderBy("id", "desc").first();
    expect(runs).toMatchObject({ status: "succeeded", trigger: "manual", cleaned: 5, batches: 3 });
  });

  test("cleaned models leave the caches, their shares end, and the deletions are audited", async () => {
    const admin = await server().adminActor();
    await admin.grpc.cleanupExpiredModels({ dryRun: false });
    const now = new Date();
    const id = await seed(now, { ageMs: 200 * DAY });
    const ownerId = (await server().db.knex("voice_models").where("id", id).first()).user_id as string;
    const owner = await mintToken(ownerId);
    // Read it twice so the model cache holds it.
    for (let i = 0; i < 2; i++) expect((await server().call("grpc", "getVoiceModel", { modelId: id }, owner)).code).toBe(0);
    const run = await admin.grpc.cleanupExpiredModels({ dryRun: false, batchSize: 10 });
    expect(run.message.cleanedCount).toBe(1);
    expectRpcError(await server().call("grpc", "getVoiceModel", { modelId: id }, owner), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND" });
    expectRpcError(await server().call("connect", "getVoiceModel", { modelId: id }, owner), { code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND" });
    const events = (await admin.grpc.listAuditEvents({ modelId: id })).message.events;
    expect(events[0]).toMatchObject({ action: "model.deleted", actorId: admin.userId, targetUserId: ownerId });
  });

  test("only admins run cleanup", async () => {
    const alice = await server().actor();
    const service = await server().serviceActor();
    for (const who of [alice, service]) {
      expectRpcError(await server().call("grpc", "cleanupExpiredModels", { dryRun: true }, who.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    }
    const admin = await server().adminActor();
    expectRpcError(await server().call("connect", "cleanupExpiredModels", { batchSize: 10_001 }, admin.token), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "batchSize",
    });
  });

  test("ListExpiringModels shows what becomes eligible within N days, and why", async () => {
    const knex = server().db.knex;
    const now = new Date();
    const userId = uniqueUser("exp");
    await knex("model_owners").insert({ user_id: userId });
    const insert = async (ageDays: number, quality: number, extra: object = {}) => {
      const id = randomUUID();
      await knex("voice_models").insert({ id, user_id: userId, provider: "xtts-v2", model_path: `m/${id}`, quality_score: quality, created_at: new Date(now.getTime() - ageDays * DAY), ...extra });
      return id;
    };
    const soon = await insert(170, 0.2); // eligible in 10 days
    const later = await insert(100, 0.2); // eligible in 80 days
    await insert(170, 0.8); // quality too high: never
    await insert(170, 0.2, { is_active: true, status: "completed" }); // active: never
    const usedRecently = await insert(300, 0.2); // eligible 30 days after its last use (20 days from now)
    await knex("usage_totals").insert({ model_id: usedRecently, usage_count: 3, last_used_at: new Date(now.getTime() - 10 * DAY) });

    const token = await mintToken(userId);
    const r30 = await server().call("grpc", "listExpiringModels", {}, token);
    expect(r30.code).toBe(0);
    expect(r30.message.models.map((m: any) => m.model.id)).toEqual([soon, usedRecently]);
    const first = r30.message.models[0];
    const eligibleAt = Number(first.eligibleAt.seconds) * 1000;
    expect(Math.abs(eligibleAt - (now.getTime() + 10 * DAY))).toBeLessThan(5_000);
    expect(first.reasons).toContain("quality 0.200 below 0.500");
    expect(r30.message.models[1].reasons[3]).toMatch(/^last used/);

    const r90 = await server().call("connect", "listExpiringModels", { withinDays: 90 }, token);
    expect(r90.message.models.map((m: any) => m.model.id)).toEqual([soon, usedRecently, later]);
    expectRpcError(await server().call("connect", "listExpiringModels", { withinDays: 366 }, token), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "withinDays" });
    const other = await server().actor();
    expectRpcError(await server().call("grpc", "listExpiringModels", { userId }, other.token), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
  });
});

describeOnPostgres("cleanup at scale", () => {
  test("100,000 eligible rows are cleaned in batches", async () => {
    const knex = server().db.knex;
    const admin = await server().adminActor();
    await admin.grpc.cleanupExpiredModels({ dryRun: false });
    await knex.raw(`INSERT INTO model_owners (user_id) SELECT 'bulk-' || g FROM generate_series(1, 10000) g`);
    await knex.raw(`
      INSERT INTO voice_models (user_id, provider, model_path, quality_score, created_at)
      SELECT 'bulk-' || (g % 10000 + 1), 'xtts-v2', 'bulk/' || g, 0.2, now() - interval '200 days' - g * interval '1 second'
        FROM generate_series(1, 100000) g`);
    await knex.raw(`ANALYZE voice_models`);
    const started = Date.now();
    const { message } = await admin.grpc.cleanupExpiredModels({ dryRun: false, batchSize: 5000 }, { deadlineMs: 280_000 });
    const elapsed = Date.now() - started;
    expect({ eligible: message.eligibleCount, cleaned: message.cleanedCount, batches: message.batches }).toEqual({ eligible: 100_000, cleaned: 100_000, batches: 20 });
    const left = await knex("voice_models").where("user_id", "like", "bulk-%").whereNull("deleted_at").count("* as n").first();
    expect(Number(left!.n)).toBe(0);
    process.stdout.write(`cleanup of 100,000 rows in 20 batches: ${elapsed} ms\n`);
  }, 300_000);
});
