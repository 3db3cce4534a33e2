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

describe("who sees what", () => {
  test("a sharee sees a shared model's events while the share lasts, then its share_revoked, then nothing", async () => {
    const owner = await server().actor();
    const friend = await server().actor();
    const model = await createModel(owner);
    const other = await createModel(owner);
    const watch = new EventWatch(grpcStreamingClient(server().grpcPort, friend.token));
    try {
      await watch.opened();
      await owner.grpc.shareVoiceModel({ modelId: model.id, targetUserIds: [friend.userId, "someone-else"], permissions: ["view"] });
      await owner.grpc.updateVoiceModel({ modelId: model.id, metadata: { v: 1 } });
      await owner.grpc.updateVoiceModel({ modelId: other.id, metadata: { v: 1 } });
      await owner.grpc.revokeShare({ modelId: model.id, targetUserIds: [friend.userId] });
      await owner.grpc.updateVoiceModel({ modelId: model.id, metadata: { v: 2 } });
      // A change the friend may see again marks the end of what can arrive.
      const mine = await createModel(friend);
      await watch.until((w) => w.events.some((e) => e.modelId === mine.id));
      const seen = watch.events.filter((e) => e.modelId === model.id);
      expect(seen.map((e) => e.type)).toEqual(["shared", "updated", "share_revoked"]);
      // A sharee learns only about itself among the share's targets, and gets no state after revoke.
      expect(seen[0].targetUserIds).toEqual([friend.userId]);
      expect(seen[2].targetUserIds).toEqual([friend.userId]);
      expect(seen[2].model).toBeUndefined();
      expect(watch.events.some((e) => e.modelId === other.id)).toBe(false);
    } finally {
      await watch.cancel();
    }
  });

  test("the service role watches every user; with userId, one user", async () => {
    const service = await server().serviceActor();
    const alice = await server().actor();
    const bob = await server().actor();
    const all = new EventWatch(grpcStreamingClient(server().grpcPort, service.token));
    const onlyBob = new EventWatch(grpcStreamingClient(server().grpcPort, service.token), { userId: bob.userId });
    try {
      await Promise.all([all.opened(), onlyBob.opened()]);
      const a = await createModel(alice);
      const b = await createModel(bob);
      await all.until((w) => w.events.some((e) => e.modelId === b.id && e.type === "activated"));
      expect(all.events.filter((e) => e.modelId === a.id || e.modelId === b.id).map((e) => e.userId)).toEqual([alice.userId, alice.userId, bob.userId, bob.userId]);
      await onlyBob.until((w) => w.events.length === 2);
      expect(onlyBob.events.map((e) => e.modelId)).toEqual([b.id, b.id]);
    } finally {
      await Promise.all([all.cancel(), onlyBob.cancel()]);
    }
  });

  test("a user may not watch another user: PERMISSION_DENIED", async () => {
    const alice = await server().actor();
    const watch = new EventWatch(grpcStreamingClient(server().grpcPort, alice.token), { userId: "somebody-else" });
    await watch.done;
    expect(watch.error?.code).toBe(Code.PermissionDenied);
  });
});

test("undelete, upload, status changes and restores are named as such", async () => {
  const alice = await server().actor();
  const service = await server().serviceActor();
  const model = await createModel(alice, { qualityScore: 0.3 });
  const watch = new EventWatch(grpcStreamingClient(server().grpcPort, alice.token));
  try {
    await watch.opened();
    const streaming = grpcStreamingClient(server().grpcPort, alice.token);
    await streaming.uploadModelFile(
      (async function* () {
        yield { part: { case: "header" as const, value: { modelId: model.id } } };
        yield { part: { case: "chunk" as const, value: new Uint8Array([1, 2, 3]) } };
      })(),
    );
    await service.grpc.updateVoiceModel({ modelId: model.id, status: "failed" });
    await alice.grpc.deleteVoiceModel({ modelId: model.id });
    await alice.grpc.undeleteVoiceModel({ modelId: model.id });
    let backupPath = "";
    for await (const m of streaming.createBackup({})) if (m.backup) backupPath = m.backup.backupPath;
    await streaming.restoreBackup({ backupPath, overwriteExisting: true });
    await watch.until((w) => w.events.some((e) => e.type === "restored"));
    expect(types(watch)).toEqual(["file_stored", "status_changed", "deleted", "undeleted", "restored"]);
    // Leaving "completed" deactivated the model in the same write: its state says so.
    expect(watch.events[1].model?.isActive).toBe(false);
  } finally {
    await watch.cancel();
  }
});
