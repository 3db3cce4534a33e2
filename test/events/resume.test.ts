// The change-event stream under load: concurrent writers, a reader killed and resumed at random
// points and across a server restart, a reader that falls far behind, erasure and retention.
import { randomInt } from "node:crypto";
import { Code } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import type { VoiceModelEvent } from "../../gen/voicemodel/v1/events_pb";
import { createTestDatabase, type TestDatabase } from "../helpers/database";
import { describeOnPostgres, onPostgres } from "../helpers/env";
import { insertEvents } from "../../src/events/event-repository";
import { EventWatch } from "../helpers/event-watch";
import { createModel, startTestServer, type Actor, type TestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";
import { serviceToken } from "../helpers/tokens";

let database: TestDatabase;
const servers: TestServer[] = [];

async function start(env: Record<string, string> = {}): Promise<TestServer> {
  const server = await startTestServer({ database: database.db, env: { EVENT_HEARTBEAT_SECONDS: "1", ...env } });
  servers.push(server);
  return server;
}

async function stop(server: TestServer): Promise<void> {
  servers.splice(servers.indexOf(server), 1);
  await server.close();
}

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  for (const server of [...servers]) await stop(server);
  await database?.dispose();
});

/** Every event in the table, oldest first, as the service role would receive them. */
async function tableEvents(): Promise<Array<{ id: bigint; type: string; modelId: string | null }>> {
  const { rows } = await database.db.knex.raw(`SELECT id::text AS event_id, type, model_id FROM voice_model_events ORDER BY id`);
  return (rows as Array<{ event_id: string; type: string; model_id: string | null }>).map((r) => ({ id: BigInt(r.event_id), type: r.type, modelId: r.model_id }));
}

/** A few writes of one user: creates, edits numbered v = 1, 2, ..., activations and a delete. */
async function writeAsUser(actor: Actor, rounds: number): Promise<void> {
  const models = [await createModel(actor, { qualityScore: 0.5 })];
  for (let v = 1; v <= rounds; v++) {
    const pick = models[randomInt(models.length)];
    switch (randomInt(4)) {
      case 0:
        models.push(await createModel(actor, { qualityScore: randomInt(1000) / 1000 }));
        break;
      case 1:
        await actor.grpc.activateVoiceModel({ modelId: pick.id }).catch(() => undefined);
        break;
      default:
        await actor.grpc.updateVoiceModel({ modelId: pick.id, metadata: { v } });
    }
  }
  await actor.grpc.deleteVoiceModel({ modelId: models[0].id });
}

test("50 concurrent writers; a reader killed and resumed at random points and across a restart gets every event once, in commit order", async () => {
  const writer = await start();
  // On PostgreSQL the reader has a server of its own, woken through NOTIFY; the embedded database
  // has one instance, which is restarted under the reader instead.
  let reader = onPostgres ? await start() : writer;
  const token = await serviceToken();
  const received: VoiceModelEvent[] = [];
  let after: bigint | undefined;
  let writing = true;
  let restarts = 0;
  let resumes = 0;

  const read = async () => {
    for (;;) {
      const watch = new EventWatch(grpcStreamingClient(reader.grpcPort, token), after === undefined ? {} : { afterEventId: after });
      const killAfter = randomInt(1, 40);
      try {
        // Killed after a few events, or once the writers are done and an idle heartbeat came.
        await watch.until((w) => w.events.length >= killAfter || (!writing && w.heartbeats.length > 1), 30_000);
      } catch (error) {
        if (!watch.ended) throw error;
      }
      await watch.cancel();
      // A stream opened on the stopping instance is refused (REFUSED_STREAM: never processed, so
      // safe to retry, UNAVAILABLE in gRPC's mapping; connect-node reports it as internal).
      if (watch.error && watch.error.code !== Code.Unavailable && !/REFUSED_STREAM/.test(watch.error.message)) throw watch.error;
      received.push(...watch.events);
      after = watch.events.length ? watch.events[watch.events.length - 1].eventId : (watch.heartbeats[watch.heartbeats.length - 1] ?? after);
      resumes++;
      if (!writing && watch.events.length === 0) return;
    }
  };

  const writers = (async () => {
    const actors = await Promise.all(Array.from({ length: 50 }, () => writer.actor()));
    const half = actors.slice(0, 25);
    await Promise.all(half.map((a) => writeAsUser(a, 4)));
    if (onPostgres) {
      // The reader's instance goes away mid-stream and another takes its place.
      const old = reader;
      reader = await start();
      await stop(old);
    }
    restarts++;
    await Promise.all(actors.slice(25).map((a) => writeAsUser(a, 4)));
    writing = false;
  })();
  const reading = read();
  await writers;
  await reading;

  const expected = await tableEvents();
  expect(restarts).toBe(1);
  expect(resumes).toBeGreaterThan(5);
  expect(received.map((e) => e.eventId)).toEqual(expected.map((e) => e.id));
  expect(received.map((e) => e.type)).toEqual(expected.map((e) => e.type));
  // Per model, the edits arrive in the order they were acknowledged (v counts up per user).
  const edits = new Map<string, number[]>();
  for (const e of received) {
    const v = (e.model?.metadata as { v?: number } | undefined)?.v;
    if (e.type === "updated" && v !== undefined) edits.set(e.modelId, [...(edits.get(e.modelId) ?? []), v]);
  }
  for (const values of edits.values()) expect(values).toEqual([...values].sort((a, b) => a - b));
  expect(expected.length).toBeGreaterThan(300);

  // Resuming after any point gives the rest: checked at a spread of points.
  const server = servers[servers.length - 1];
  for (let i = 0; i < expected.length; i += Math.ceil(expected.length / 25)) {
    const watch = new EventWatch(grpcStreamingClient(server.grpcPort, token), { afterEventId: expected[i].id });
    const want = expected.slice(i + 1, i + 6).map((e) => e.id);
    await watch.until((w) => w.events.length >= want.length);
    await watch.cancel();
    expect(watch.events.slice(0, want.length).map((e) => e.eventId)).toEqual(want);
  }
}, 180_000);

test("a reader that takes nothing while hundreds of events commit still gets each once, in order", async () => {
  const server = servers[0] ?? (await start());
  const alice = await server.actor();
  const model = await createModel(alice);
  let resume!: () => void;
  const paused = new Promise<void>((resolve) => (resume = resolve));
  const watch = new EventWatch(grpcStreamingClient(server.grpcPort, alice.token), {}, paused);
  try {
    await watch.opened();
    // More than the server queues per watcher and the transport's window hold.
    for (let v = 1; v <= 700; v += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, i) => alice.grpc.updateVoiceModel({ modelId: model.id, metadata: { v: v + i, pad: "x".repeat(200) } }).catch(() => undefined)));
    }
    resume();
    await watch.until((w) => w.events.length >= 700, 60_000);
    const ids = watch.events.map((e) => e.eventId);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort((a, b) => (a < b ? -1 : 1))).toEqual(ids);
    const { rows } = await database.db.knex.raw(`SELECT count(*)::int AS n FROM voice_model_events WHERE model_id = ? AND type = 'updated'`, [model.id]);
    expect(watch.events.filter((e) => e.type === "updated")).toHaveLength(rows[0].n);
  } finally {
    await watch.cancel();
  }
}, 120_000);

test("erasure: the watcher's stream ends after its 'erased' event, and no event keeps the plain id or a payload", async () => {
  const server = servers[0] ?? (await start());
  const alice = await server.actor();
  const friend = await server.actor();
  const admin = await server.adminActor();
  const model = await createModel(alice);
  await alice.grpc.shareVoiceModel({ modelId: model.id, targetUserIds: [friend.userId], permissions: ["view"] });
  const theirs = await createModel(friend);
  await friend.grpc.shareVoiceModel({ modelId: theirs.id, targetUserIds: [alice.userId], permissions: ["view"] });
  const aliceWatch = new EventWatch(grpcStreamingClient(server.grpcPort, alice.token));
  const friendWatch = new EventWatch(grpcStreamingClient(server.grpcPort, friend.token));
  try {
    await Promise.all([aliceWatch.opened(), friendWatch.opened()]);
    for await (const _ of grpcStreamingClient(server.grpcPort, admin.token).deleteUserData({ userId: alice.userId })) void _;
    await aliceWatch.done;
    expect(aliceWatch.error).toBeUndefined();
    expect(aliceWatch.events[aliceWatch.events.length - 1].type).toBe("erased");
    expect(aliceWatch.events[aliceWatch.events.length - 1].model).toBeUndefined();
    // The sharee is told its share ended.
    await friendWatch.until((w) => w.events.some((e) => e.type === "share_revoked" && e.modelId === model.id));
    const { rows } = await database.db.knex.raw(
      `SELECT count(*)::int AS n FROM voice_model_events WHERE user_id = ? OR ? = ANY(audience) OR model::text LIKE ?`,
      [alice.userId, alice.userId, `%${alice.userId}%`],
    );
    expect(rows[0].n).toBe(0);
    const { rows: blank } = await database.db.knex.raw(`SELECT count(*)::int AS n FROM voice_model_events WHERE model_id = ? AND model IS NOT NULL`, [model.id]);
    expect(blank[0].n).toBe(0);
  } finally {
    await Promise.all([aliceWatch.cancel(), friendWatch.cancel()]);
  }
});

test("resuming from before the retention: EVENTS_EXPIRED; after it: the kept events", async () => {
  const server = await start({ EVENT_RETENTION_HOURS: "1", EVENT_PRUNE_INTERVAL_MS: "100" });
  const alice = await server.actor();
  const old = await createModel(alice);
  await database.db.knex.raw(`UPDATE voice_model_events SET at = now() - interval '2 hours' WHERE model_id = ?`, [old.id]);
  const oldIds = (await database.db.knex("voice_model_events").where({ model_id: old.id }).pluck("id")).map(Number);
  const until = Date.now() + 10_000;
  while ((await database.db.knex("voice_model_events").where({ model_id: old.id }).count({ n: "*" }))[0].n !== 0 && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const pruned = await database.db.knex("voice_model_event_retention").first("pruned_through_id");
  expect(Number(pruned.pruned_through_id)).toBeGreaterThanOrEqual(Math.max(...oldIds));
  const expired = new EventWatch(grpcStreamingClient(server.grpcPort, alice.token), { afterEventId: BigInt(Math.min(...oldIds) - 1) });
  await expired.done;
  expect(expired.error?.code).toBe(Code.FailedPrecondition);
  expect(expired.error?.findDetails(ErrorInfoSchema)[0]?.reason).toBe("EVENTS_EXPIRED");
  expect(expired.error?.rawMessage).toMatch(/no longer kept/);
  const kept = new EventWatch(grpcStreamingClient(server.grpcPort, alice.token), { afterEventId: BigInt(pruned.pruned_through_id) });
  try {
    await kept.opened();
  } finally {
    await kept.cancel();
  }
  await stop(server);
});

test("shutdown ends watch streams at once with UNAVAILABLE, not after the grace period", async () => {
  const server = await start();
  const alice = await server.actor();
  const watch = new EventWatch(grpcStreamingClient(server.grpcPort, alice.token));
  await watch.opened();
  const started = Date.now();
  servers.splice(servers.indexOf(server), 1);
  const closing = server.close(20_000);
  await watch.done;
  expect(watch.error?.code).toBe(Code.Unavailable);
  expect(Date.now() - started).toBeLessThan(3_000);
  await closing;
});

describeOnPostgres("the outbox trap", () => {
  test("an event that takes its id first and commits last is delivered, before the one committed meanwhile", async () => {
    const server = servers[0] ?? (await start());
    const service = await server.serviceActor();
    const alice = await server.actor();
    const model = await createModel(alice);
    const watch = new EventWatch(grpcStreamingClient(server.grpcPort, service.token));
    await watch.opened();
    // A writer that has its event id and has not committed yet...
    const slow = await database.db.knex.transaction();
    let write: Promise<unknown> | undefined;
    try {
      await insertEvents(slow, [{ type: "updated", userId: alice.userId, modelId: model.id }]);
      // ...while another writer commits a change: it must wait for the first to commit.
      let settled = false;
      write = alice.grpc.updateVoiceModel({ modelId: model.id, metadata: { later: true } }).finally(() => (settled = true));
      // (Without the outbox lock it commits at once, and a reader past its id would skip the first.)
      const until = Date.now() + 10_000;
      for (;;) {
        const { rows } = await database.db.knex.raw(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`);
        if (rows[0].n > 0 || settled) break;
        if (Date.now() > until) throw new Error("the second write neither waited nor finished");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(settled).toBe(false);
      await slow.commit();
    } catch (error) {
      await slow.rollback().catch(() => undefined);
      throw error;
    }
    await write;
    await watch.until((w) => w.events.filter((e) => e.modelId === model.id).length >= 2);
    await watch.cancel();
    const [first, second] = watch.events.filter((e) => e.modelId === model.id);
    expect(first.model).toBeUndefined();
    expect(second.model?.metadata).toEqual({ later: true });
    expect(first.eventId).toBeLessThan(second.eventId);
  });
});
