import { Code } from "@connectrpc/connect";
import { EventWatch, WATCH_PROTOCOLS, watchClient } from "../helpers/event-watch";
import { createModel, useTestServer } from "../helpers/harness";
import { grpcStreamingClient } from "../helpers/streaming-client";

const server = useTestServer({ env: { EVENT_HEARTBEAT_SECONDS: "1" } });

const types = (w: EventWatch) => w.events.map((e) => e.type);

describe.each(WATCH_PROTOCOLS)("over %s", (protocol) => {
  test("a user sees the changes of their models live, in order, with the state each left", async () => {
    const alice = await server().actor();
    const watch = new EventWatch(watchClient(server(), protocol, alice.token));
    try {
      await watch.opened();
      const first = await createModel(alice, { qualityScore: 0.5 });
      const second = await createModel(alice, { qualityScore: 0.9 });
      await alice.grpc.updateVoiceModel({ modelId: first.id, metadata: { note: "x" } });
      await alice.grpc.deleteVoiceModel({ modelId: second.id });
      await watch.until((w) => w.events.length >= 8);
      expect(watch.events.map((e) => [e.type, e.modelId])).toEqual([
        ["created", first.id],
        ["activated", first.id],
        ["created", second.id],
        ["deactivated", first.id],
        ["activated", second.id],
        ["updated", first.id],
        ["deleted", second.id],
        ["activated", first.id],
      ]);
      const ids = watch.events.map((e) => e.eventId);
      expect([...ids].sort((a, b) => (a < b ? -1 : 1))).toEqual(ids);
      const updated = watch.events[5];
      expect(updated.model?.metadata).toEqual({ note: "x" });
      expect(updated.userId).toBe(alice.userId);
      expect(watch.events[6].model?.deletedAt).toBeDefined();
    } finally {
      await watch.cancel();
    }
  });
});

test("resuming after an id delivers exactly the later events", async () => {
  const alice = await server().actor();
  const first = new EventWatch(grpcStreamingClient(server().grpcPort, alice.token));
  await first.opened();
  for (let i = 0; i < 5; i++) await createModel(alice, { qualityScore: 0.1 });
  await first.until((w) => w.events.length === 6); // 5 created, 1 activated
  await first.cancel();
  const middle = first.events[2].eventId;
  const resumed = new EventWatch(grpcStreamingClient(server().grpcPort, alice.token), { afterEventId: middle });
  try {
    await resumed.until((w) => w.events.length === 3);
    expect(resumed.events.map((e) => e.eventId)).toEqual(first.events.slice(3).map((e) => e.eventId));
    expect(resumed.heartbeats[0]).toBe(middle);
  } finally {
    await resumed.cancel();
  }
});

test("an idle stream carries heartbeats that say where to resume", async () => {
  const alice = await server().actor();
  const watch = new EventWatch(grpcStreamingClient(server().grpcPort, alice.token));
  try {
    await watch.opened();
    await createModel(alice);
    await watch.until((w) => w.events.length === 2);
    await watch.until((w) => w.heartbeats.length >= 2, 5_000, "a heartbeat after the events");
    expect(watch.heartbeats[watch.heartbeats.length - 1]).toBeGreaterThanOrEqual(watch.events[1].eventId);
  } finally {
    await watch.cancel();
  }
});

test("afterEventId ahead of the newest event: INVALID_ARGUMENT", async () => {
  const alice = await server().actor();
  const watch = new EventWatch(grpcStreamingClient(server().grpcPort, alice.token), { afterEventId: 1n << 60n });
  await watch.done;
  expect(watch.error?.code).toBe(Code.InvalidArgument);
  expect(watch.error?.rawMessage).toMatch(/afterEventId/);
});
