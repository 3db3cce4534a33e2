import { Code } from "@connectrpc/connect";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { expectGrpcError } from "../helpers/expect-error";
import { createModel, useTestServer, type Actor } from "../helpers/harness";
import { analyticsQuery, rangeSumsQuery } from "../../src/usage/usage-repository";
import { usageInput, type UsageInput } from "./helpers";

const server = useTestServer();

/** A small deterministic generator, so a failure can be replayed. */
function random(seed: number) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
}

const DAY = 86_400_000;
const BASE = Date.UTC(2026, 5, 1, 0, 0, 0);

interface Expected {
  count: number;
  cost: number;
  latency: number;
  ratings: number[];
  last: number | undefined;
}

function expectedOf(events: UsageInput[]): Expected {
  const e: Expected = { count: 0, cost: 0, latency: 0, ratings: [], last: undefined };
  for (const ev of events) {
    e.count++;
    e.cost += Math.round(ev.cost! * 1e6);
    e.latency += ev.latencyMs!;
    if (ev.qualityRating !== undefined) e.ratings.push(ev.qualityRating);
    const t = timestampDate(ev.usedAt as Timestamp).getTime();
    e.last = e.last === undefined ? t : Math.max(e.last, t);
  }
  return e;
}

function expectStats(actual: { usageCount: number; totalCost: number; averageLatency: number; qualityRating?: number; lastUsed?: { seconds: bigint; nanos: number } }, e: Expected) {
  expect(actual.usageCount).toBe(e.count);
  expect(actual.totalCost).toBeCloseTo(e.cost / 1e6, 6);
  expect(actual.averageLatency).toBeCloseTo(e.count ? e.latency / e.count : 0, 6);
  if (e.ratings.length) expect(actual.qualityRating).toBeCloseTo(e.ratings.reduce((a, b) => a + b, 0) / e.ratings.length, 6);
  else expect(actual.qualityRating).toBeUndefined();
  if (e.last === undefined) expect(actual.lastUsed).toBeUndefined();
  else expect(timestampDate(actual.lastUsed as never).getTime()).toBe(e.last);
}

describe("stats and analytics from recorded events", () => {
  let alice: Actor;
  let tts: Actor;
  const models: { id: string; provider: string; score: number }[] = [];
  const events = new Map<string, UsageInput[]>();

  beforeAll(async () => {
    alice = await server().actor();
    tts = await server().serviceActor();
    const providers = ["xtts-v2", "google-cloud-tts", "openai-tts"];
    const rnd = random(42);
    for (let i = 0; i < 6; i++) {
      const score = Math.round(rnd() * 1000) / 1000;
      const m = await createModel(alice, { provider: providers[i % 3], qualityScore: score, sizeBytes: BigInt(1_000_000 + i * 250_000) });
      models.push({ id: m.id, provider: m.provider, score: m.qualityScore });
      events.set(m.id, []);
    }
    // 2,400 events over 10 days, spread unevenly over the models, some rated.
    const all: UsageInput[] = [];
    for (let i = 0; i < 2400; i++) {
      const model = models[Math.floor(rnd() * rnd() * models.length)];
      const ev = usageInput(model.id, alice.userId, {
        latencyMs: Math.floor(rnd() * 2000),
        cost: Math.round(rnd() * 1e6) / 1e7,
        qualityRating: rnd() < 0.3 ? 1 + Math.floor(rnd() * 5) : undefined,
        usedAt: timestampFromDate(new Date(BASE + Math.floor(rnd() * 10 * DAY))),
        characters: BigInt(Math.floor(rnd() * 500)),
      });
      events.get(model.id)!.push(ev);
      all.push(ev);
    }
    for (let i = 0; i < all.length; i += 1000) await tts.grpc.recordUsageBatch({ events: all.slice(i, i + 1000) });
  });

  test("lifetime stats of each model match the events", async () => {
    for (const m of models) {
      const { message } = await alice.grpc.getVoiceModelUsageStats({ modelId: m.id });
      expect(message.modelId).toBe(m.id);
      expectStats(message, expectedOf(events.get(m.id)!));
    }
  });

  test("stats for a range of UTC days match the events of those days", async () => {
    const m = models[0];
    const start = new Date(BASE + 2 * DAY + 5 * 3600_000); // inside day 2: the whole day counts
    const end = new Date(BASE + 6 * DAY); // exclusive: days 2..5
    const inRange = events.get(m.id)!.filter((e) => {
      const t = timestampDate(e.usedAt as Timestamp).getTime();
      return t >= BASE + 2 * DAY && t < BASE + 6 * DAY;
    });
    const message = await alice.connect.getVoiceModelUsageStats({ modelId: m.id, startTime: timestampFromDate(start), endTime: timestampFromDate(end) });
    expectStats(message, expectedOf(inRange));
    const { message: none } = await alice.grpc.getVoiceModelUsageStats({
      modelId: m.id,
      startTime: timestampFromDate(new Date(BASE - 5 * DAY)),
      endTime: timestampFromDate(new Date(BASE - 3 * DAY)),
    });
    expectStats(none, expectedOf([]));
  });

  test("analytics of the user match the models and events; deleted models are excluded", async () => {
    const check = async (live: typeof models) => {
      const { message: a } = await alice.grpc.getVoiceModelAnalytics({});
      const liveEvents = live.flatMap((m) => events.get(m.id)!);
      const e = expectedOf(liveEvents);
      expect(a.totalModels).toBe(live.length);
      expect(a.activeModels).toBe(1);
      const byProvider: Record<string, number> = {};
      for (const m of live) byProvider[m.provider] = (byProvider[m.provider] ?? 0) + 1;
      expect(a.modelsByProvider).toEqual(byProvider);
      expect(a.averageQualityScore).toBeCloseTo(live.reduce((s, m) => s + m.score, 0) / live.length, 6);
      expect(a.totalUsageCount).toBe(e.count);
      expect(a.totalCost).toBeCloseTo(e.cost / 1e6, 6);
      expect(timestampDate(a.lastUsed!).getTime()).toBe(e.last);
      const sizes = live.map((m) => 1_000_000 + models.indexOf(m) * 250_000);
      expect(a.storageUsedMb).toBeCloseTo(sizes.reduce((s, n) => s + n, 0) / 1_000_000, 6);
    };
    await check(models);
    // Deleting a model drops it and its usage from the analytics (the cached value is invalidated).
    const victim = models.find((m) => events.get(m.id)!.length > 0 && m.id !== models[0].id)!;
    await alice.grpc.deleteVoiceModel({ modelId: victim.id });
    await check(models.filter((m) => m !== victim));
  });

  test("stats and analytics never read raw events (the SQL they run, and its plans)", async () => {
    const knex = server().db.knex;
    const seen: string[] = [];
    const onQuery = (q: { sql: string }) => seen.push(q.sql);
    knex.on("query", onQuery);
    try {
      await alice.grpc.getVoiceModelAnalytics({});
      await alice.grpc.getVoiceModelUsageStats({ modelId: models[0].id });
      await alice.grpc.getVoiceModelUsageStats({ modelId: models[0].id, startTime: timestampFromDate(new Date(BASE)) });
    } finally {
      knex.off("query", onQuery);
    }
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.filter((sql) => /usage_events/.test(sql))).toEqual([]);

    const plan = async (query: { toString(): string }) =>
      ((await knex.raw(`EXPLAIN ${query.toString()}`)) as { rows: { "QUERY PLAN": string }[] }).rows.map((r) => r["QUERY PLAN"]).join("\n");
    const analyticsPlan = await plan(analyticsQuery(knex, alice.userId));
    expect(analyticsPlan).toMatch(/usage_totals/);
    expect(analyticsPlan).not.toMatch(/usage_events/);
    const rangePlan = await plan(rangeSumsQuery(knex, models[0].id, "2026-06-01", "2026-06-05"));
    expect(rangePlan).toMatch(/usage_daily/);
    expect(rangePlan).not.toMatch(/usage_events/);
  });

  test("stats need a model the caller may use; analytics only the caller's own user", async () => {
    const bob = await server().actor();
    await expectGrpcError(bob.grpc.getVoiceModelUsageStats({ modelId: models[0].id }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    await expectGrpcError(bob.grpc.getVoiceModelAnalytics({ userId: alice.userId }), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
    await expectGrpcError(tts.grpc.getVoiceModelAnalytics({}), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "userId" });
    const { message } = await tts.grpc.getVoiceModelAnalytics({ userId: alice.userId });
    expect(message.totalModels).toBe(models.length - 1);
    await expectGrpcError(alice.grpc.getVoiceModelUsageStats({ modelId: models[0].id, startTime: timestampFromDate(new Date(BASE + DAY)), endTime: timestampFromDate(new Date(BASE)) }), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "endTime",
    });
  });

  test("a user without models gets zero analytics", async () => {
    const carol = await server().actor();
    const { message } = await carol.grpc.getVoiceModelAnalytics({});
    expect(message).toMatchObject({ totalModels: 0, activeModels: 0, averageQualityScore: 0, totalUsageCount: 0, totalCost: 0, storageUsedMb: 0 });
    expect(message.lastUsed).toBeUndefined();
    // Connect JSON shows the zeros too.
    const json = await server().rpcJson("GetVoiceModelAnalytics", {}, carol.token);
    expect(json.body).toMatchObject({ totalModels: 0, totalUsageCount: 0, storageUsedMb: 0 });
  });

  test("storage counts a file shared by two models once", async () => {
    const dave = await server().actor();
    await createModel(dave, { modelPath: "models/same.pth", sizeBytes: 3_000_000n });
    await createModel(dave, { modelPath: "models/same.pth", sizeBytes: 3_000_000n });
    await createModel(dave, { modelPath: "models/other.pth", sizeBytes: 500_000n });
    await createModel(dave);
    expect((await dave.grpc.getVoiceModelAnalytics({})).message.storageUsedMb).toBeCloseTo(3.5, 6);
    await expectGrpcError(dave.grpc.createVoiceModel({ provider: "xtts-v2", modelPath: "x", sizeBytes: -1n }), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "sizeBytes",
    });
  });
});
