import { createModel, sleep, useTestServer } from "../helpers/harness";
import { usageInput } from "./helpers";

// Raw events older than USAGE_RETENTION_DAYS are purged every USAGE_PURGE_INTERVAL_MS.
const server = useTestServer({ env: { USAGE_RETENTION_DAYS: "1", USAGE_PURGE_INTERVAL_MS: "1000" } });

test("raw events are purged after the retention period; totals stay; the key may then be reused", async () => {
  const alice = await server().actor();
  const tts = await server().serviceActor();
  const model = await createModel(alice);
  const event = usageInput(model.id, alice.userId);
  await tts.grpc.recordUsage(event);
  const kept = await tts.grpc.recordUsage(usageInput(model.id, alice.userId));
  expect(kept.message.duplicate).toBe(false);
  const knex = server().db.knex;
  await knex("usage_events").where({ model_id: model.id, idempotency_key: event.idempotencyKey }).update({ recorded_at: knex.raw("now() - interval '2 days'") });
  const deadline = Date.now() + 10_000;
  while ((await knex("usage_events").where({ model_id: model.id })).length !== 1) {
    expect(Date.now()).toBeLessThan(deadline);
    await sleep(100);
  }
  // Stats come from the totals: both events still count.
  expect((await alice.grpc.getVoiceModelUsageStats({ modelId: model.id })).message.usageCount).toBe(2);
  // Past the retention period the key is free again: a new event.
  expect((await tts.grpc.recordUsage(event)).message.duplicate).toBe(false);
  expect((await alice.grpc.getVoiceModelUsageStats({ modelId: model.id })).message.usageCount).toBe(3);
});
