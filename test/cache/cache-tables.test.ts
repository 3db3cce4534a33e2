import { createModel, sleep, useTestServer, type Actor } from "../helpers/harness";
import { usageInput } from "../usage/helpers";

const server = useTestServer({ env: { CACHE_HIT_FLUSH_INTERVAL_MS: "50", CACHE_SWEEP_INTERVAL_MS: "200", CACHE_SWEEP_BATCH_SIZE: "2" } });

const knex = () => server().db.knex;
const row = (table: string, key: string) => knex()(table).where("cache_key", key).first();
const rowsOf = (table: string, userId: string) => knex()(table).where("user_id", userId).select("cache_key");

async function until(check: () => Promise<boolean>, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(25);
  }
}

/** Fills every cache a user's data can be in: model, list, analytics, stats. */
async function warm(alice: Actor, modelId: string) {
  await alice.grpc.getVoiceModel({ modelId });
  await alice.grpc.listVoiceModels({});
  await alice.grpc.getVoiceModelAnalytics({});
  await alice.grpc.getVoiceModelUsageStats({ modelId });
  // Fills are written after the replies, by the cache's one writer.
  await until(async () => (await rowsOf("cache_voice_stats", alice.userId)).length > 0 && (await rowsOf("cache_voice_analytics", alice.userId)).length > 0);
  await until(async () => (await rowsOf("cache_voice_models", alice.userId)).length === 2);
  expect(await row("cache_voice_models", `voice_model:${modelId}`)).toBeDefined();
  expect(await row("cache_voice_analytics", `voice_analytics:${alice.userId}`)).toBeDefined();
  expect(await row("cache_voice_stats", `voice_stats:${modelId}`)).toBeDefined();
}

describe("cache tables", () => {
  test("reads are served from the cache rows (a poisoned row shows), with the keys of the design", async () => {
    const alice = await server().actor();
    const model = await createModel(alice, { qualityScore: 0.4 });
    await warm(alice, model.id);
    const cached = await row("cache_voice_models", `voice_model:${model.id}`);
    await knex()("cache_voice_models")
      .where("cache_key", `voice_model:${model.id}`)
      .update({ value: JSON.stringify({ ...cached.value, modelPath: "poisoned" }) });
    expect((await alice.grpc.getVoiceModel({ modelId: model.id })).message.model!.modelPath).toBe("poisoned");
    const keys = (await rowsOf("cache_voice_models", alice.userId)).map((r: { cache_key: string }) => r.cache_key);
    expect(keys).toEqual(expect.arrayContaining([`voice_model:${model.id}`, expect.stringMatching(new RegExp(`^voice_models:user:${alice.userId}:[0-9a-f]{32}$`))]));
  });

  type Write = [string, (alice: Actor, tts: Actor, modelId: string, other: string) => Promise<unknown>, { statsGone: boolean; modelsGone: boolean }];
  const writes: Write[] = [
    ["create", (a) => createModel(a), { statsGone: false, modelsGone: true }],
    ["update", (a, _t, id) => a.grpc.updateVoiceModel({ modelId: id, qualityScore: 0.33 }), { statsGone: false, modelsGone: true }],
    ["status update (service)", (_a, t, id) => t.grpc.updateVoiceModel({ modelId: id, status: "failed" }), { statsGone: false, modelsGone: true }],
    ["activate", (a, _t, _id, other) => a.grpc.activateVoiceModel({ modelId: other }), { statsGone: false, modelsGone: true }],
    ["deactivate", (a, _t, id) => a.grpc.deactivateVoiceModel({ modelId: id }), { statsGone: false, modelsGone: true }],
    ["delete", (a, _t, id) => a.grpc.deleteVoiceModel({ modelId: id }), { statsGone: true, modelsGone: true }],
    ["select best with activate", (a) => a.grpc.selectBestVoiceModel({ activate: true, criteria: { minQualityScore: 0.5 } }), { statsGone: false, modelsGone: true }],
    ["record usage", (a, t, id) => t.grpc.recordUsage(usageInput(id, a.userId)), { statsGone: true, modelsGone: false }],
    ["record usage batch", (a, t, id) => t.grpc.recordUsageBatch({ events: [usageInput(id, a.userId)] }), { statsGone: true, modelsGone: false }],
  ];

  test.each(writes)("%s deletes the rows whose value it changes, in its transaction", async (_name, write, expected) => {
    const alice = await server().actor();
    const tts = await server().serviceActor();
    const model = await createModel(alice, { qualityScore: 0.4 });
    const other = await createModel(alice, { qualityScore: 0.6 });
    await warm(alice, model.id);
    const before = {
      analytics: (await alice.grpc.getVoiceModelAnalytics({})).message,
      list: (await alice.grpc.listVoiceModels({})).message,
    };
    await write(alice, tts, model.id, other.id);
    // Analytics change with every write path (usage, models, activation).
    expect(await row("cache_voice_analytics", `voice_analytics:${alice.userId}`)).toBeUndefined();
    expect((await rowsOf("cache_voice_models", alice.userId)).length === 0).toBe(expected.modelsGone);
    expect((await row("cache_voice_stats", `voice_stats:${model.id}`)) === undefined).toBe(expected.statsGone);
    // And the next reads see the write.
    if (expected.modelsGone) expect((await alice.grpc.listVoiceModels({ showDeleted: true })).message).not.toEqual(before.list);
    else expect((await alice.grpc.getVoiceModelAnalytics({})).message).not.toEqual(before.analytics);
  });

  test("a failed write leaves the cache rows alone", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    await warm(alice, model.id);
    await alice.grpc.activateVoiceModel({ modelId: model.id }).catch(() => undefined); // already active: refused
    expect(await row("cache_voice_models", `voice_model:${model.id}`)).toBeDefined();
  });

  test("hit counts and last access are flushed from memory periodically", async () => {
    const alice = await server().actor();
    const model = await createModel(alice);
    await alice.grpc.getVoiceModel({ modelId: model.id }); // miss: fills
    await until(async () => (await row("cache_voice_models", `voice_model:${model.id}`)) !== undefined);
    const filled = await row("cache_voice_models", `voice_model:${model.id}`);
    expect(Number(filled.hit_count)).toBe(0);
    for (let i = 0; i < 5; i++) await alice.grpc.getVoiceModel({ modelId: model.id });
    await until(async () => Number((await row("cache_voice_models", `voice_model:${model.id}`)).hit_count) === 5);
    expect((await row("cache_voice_models", `voice_model:${model.id}`)).last_accessed_at).not.toBeNull();
  });

  test("expired rows are swept in batches and never served", async () => {
    const alice = await server().actor();
    const models = [await createModel(alice), await createModel(alice), await createModel(alice)];
    for (const m of models) await alice.grpc.getVoiceModel({ modelId: m.id });
    const keys = models.map((m) => `voice_model:${m.id}`);
    await until(async () => (await knex()("cache_voice_models").whereIn("cache_key", keys)).length === 3);
    await knex()("cache_voice_models").whereIn("cache_key", keys).update({ expires_at: knex().raw("now() - interval '1 second'") });
    await until(async () => (await knex()("cache_voice_models").whereIn("cache_key", keys)).length === 0);
  });
});
