// Many concurrent writes for one user over gRPC, with readers polling throughout: never two
// active models, every valid call succeeds (contention is retried inside the service), and the
// end state obeys the activation rules.
import { Code } from "@connectrpc/connect";
import type { VoiceModel } from "../gen/voicemodel/v1/voice_model_pb";
import { TEST_DB } from "./helpers/env";
import { createModel, uniqueUser, useTestServer, type Actor, type MethodName, type RpcOutcome } from "./helpers/harness";

const server = useTestServer();

interface Op {
  label: string;
  method: MethodName;
  request: object;
  token: string;
  /** Codes this call may legitimately end with besides OK. */
  alsoValid?: Code[];
}

/** Polls both views of the active model until stopped; records every violation it sees. */
function startReader(actor: Actor, userId: string) {
  const violations: string[] = [];
  let polls = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const [activeList, all, single] = await Promise.all([
        actor.grpc.listVoiceModels({ userId, isActive: true, limit: 100 }),
        actor.grpc.listVoiceModels({ userId, limit: 100 }),
        actor.grpc.getActiveVoiceModel({ userId }),
      ]);
      polls++;
      if (activeList.message.models.length > 1) violations.push(`isActive=true listed ${activeList.message.models.length} models`);
      if (activeList.message.total > 1) violations.push(`isActive=true total ${activeList.message.total}`);
      const flagged = all.message.models.filter((m) => m.isActive);
      if (flagged.length > 1) violations.push(`one listing showed ${flagged.length} active models`);
      for (const m of flagged) if (m.status !== "completed") violations.push(`active model ${m.id} is ${m.status}`);
      const s = single.message.model;
      if (s && (!s.isActive || s.status !== "completed" || s.deletedAt)) violations.push(`GetActive returned ${s.id} (${s.status})`);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return { violations, polls };
    },
  };
}

async function runAll(ops: Op[]): Promise<Array<{ op: Op; outcome: RpcOutcome }>> {
  return Promise.all(ops.map(async (op) => ({ op, outcome: await server().call("grpc", op.method, op.request, op.token) })));
}

function expectAllValid(results: Array<{ op: Op; outcome: RpcOutcome }>) {
  const unexpected = results
    .filter(({ op, outcome }) => outcome.code !== 0 && !(op.alsoValid ?? []).includes(outcome.code as Code))
    .map(({ op, outcome }) => `${op.label}: ${Code[outcome.code]} ${outcome.errorInfo?.reason} ${outcome.errorMessage}`);
  expect(unexpected).toEqual([]);
}

/** The next best model by the rules: completed, live, highest score, newest on ties. */
function nextBest(models: VoiceModel[]): VoiceModel | undefined {
  const eligible = models.filter((m) => m.status === "completed" && !m.deletedAt);
  eligible.sort(
    (a, b) =>
      b.qualityScore - a.qualityScore ||
      Number(b.createdAt!.seconds - a.createdAt!.seconds) ||
      b.createdAt!.nanos - a.createdAt!.nanos ||
      (a.id < b.id ? 1 : -1),
  );
  return eligible[0];
}

test(`at least 50 concurrent creates, activates, deactivates, deletes and status updates for one user (${TEST_DB})`, async () => {
  const userId = uniqueUser("busy");
  const user = await server().actor(userId);
  const service = await server().serviceActor();
  const reader = await server().actor(userId);

  // Phase 0: the models the concurrent calls act on, each set used by one kind of call only, so
  // whether a call is valid does not depend on how the calls interleave.
  const make = (n: number, fields: (i: number) => object) =>
    Promise.all(Array.from({ length: n }, (_, i) => createModel(service, { userId, ...fields(i) })));
  const targets = await make(12, (i) => ({ qualityScore: 0.1 + i * 0.05 })); // activated / deactivated
  const doomed = await make(14, (i) => ({ qualityScore: 0.3 + (i % 7) * 0.1 })); // deleted
  const failing = await make(10, (i) => ({ qualityScore: 0.5 + (i % 5) * 0.1 })); // completed -> failed/training
  const finishing = await make(10, (i) => ({ status: "pending", qualityScore: 0.6 + (i % 4) * 0.1 })); // pending -> completed

  const watcher = startReader(reader, userId);
  const ops: Op[] = [];
  const create = (i: number, phase: number): Op => ({
    label: `p${phase} create ${i}`,
    method: "createVoiceModel",
    request: { provider: "xtts-v2", modelPath: `c/${phase}/${i}`, qualityScore: (i * 13) % 100 / 100, status: i % 4 === 0 ? "pending" : "completed" },
    token: user.token,
  });
  const activate = (m: VoiceModel, phase: number): Op => ({
    label: `p${phase} activate ${m.id}`,
    method: "activateVoiceModel",
    request: { modelId: m.id },
    token: user.token,
    // It may already be active: made so by an earlier call in the same burst.
    alsoValid: [Code.AlreadyExists],
  });
  const del = (m: VoiceModel, phase: number): Op => ({ label: `p${phase} delete ${m.id}`, method: "deleteVoiceModel", request: { modelId: m.id }, token: user.token });
  const setStatus = (m: VoiceModel, status: string, phase: number): Op => ({
    label: `p${phase} ${status} ${m.id}`,
    method: "updateVoiceModel",
    request: { modelId: m.id, status },
    token: service.token,
  });

  // Phase 1: everything at once, deactivations included.
  for (let i = 0; i < 12; i++) ops.push(create(i, 1));
  for (const m of targets) ops.push(activate(m, 1));
  for (let i = 0; i < 8; i++) ops.push({ label: `p1 deactivate ${i}`, method: "deactivateVoiceModel", request: { modelId: targets[(i * 5) % 12].id }, token: user.token });
  for (const m of doomed.slice(0, 9)) ops.push(del(m, 1));
  for (const [i, m] of failing.slice(0, 6).entries()) ops.push(setStatus(m, i % 2 ? "failed" : "training", 1));
  for (const m of finishing.slice(0, 6)) ops.push(setStatus(m, "completed", 1));
  expect(ops.length).toBeGreaterThanOrEqual(50);
  const phase1 = await runAll(ops.sort(() => Math.random() - 0.5));
  expectAllValid(phase1);

  // Phase 2: no deactivations, so the user must end with exactly one active model.
  const ops2: Op[] = [];
  for (let i = 12; i < 24; i++) ops2.push(create(i, 2));
  for (const m of targets) ops2.push(activate(m, 2));
  for (const m of doomed.slice(9)) ops2.push(del(m, 2));
  for (const m of failing.slice(6)) ops2.push(setStatus(m, "failed", 2));
  for (const m of finishing.slice(6)) ops2.push(setStatus(m, "completed", 2));
  const phase2 = await runAll(ops2.sort(() => Math.random() - 0.5));
  expectAllValid(phase2);

  const { violations, polls } = await watcher.stop();
  expect(violations).toEqual([]);
  expect(polls).toBeGreaterThan(0);

  // End state.
  const { message } = await service.grpc.listVoiceModels({ userId, limit: 100 });
  const live = message.models;
  expect(message.total).toBe(targets.length + failing.length + finishing.length + 24);
  const active = live.filter((m) => m.isActive);
  expect(active).toHaveLength(1);
  expect(active[0].status).toBe("completed");
  expect((await service.grpc.getActiveVoiceModel({ userId })).message.model!.id).toBe(active[0].id);
  for (const m of doomed) expect((await server().call("grpc", "getVoiceModel", { modelId: m.id }, user.token)).code).toBe(Code.NotFound);
  for (const m of failing) expect(live.find((x) => x.id === m.id)).toMatchObject({ isActive: false });
  for (const m of finishing) expect(live.find((x) => x.id === m.id)!.status).toBe("completed");

  // Deleting the active model, again and again, always hands over to the next best.
  let remaining = live;
  for (let current = active[0]; current; ) {
    const { message: reply } = await user.grpc.deleteVoiceModel({ modelId: current.id });
    remaining = remaining.filter((m) => m.id !== current.id);
    const expected = nextBest(remaining);
    expect(reply.activeModelId).toBe(expected?.id);
    if (!expected) break;
    remaining = remaining.map((m) => ({ ...m, isActive: m.id === expected.id }));
    current = expected;
  }
  expect((await user.grpc.getActiveVoiceModel({})).message.model).toBeUndefined();
  const left = (await user.grpc.listVoiceModels({ limit: 100 })).message.models;
  expect(left.every((m) => m.status !== "completed" && !m.isActive)).toBe(true);
});

test("60 concurrent activations of 10 models leave exactly one active", async () => {
  const user = await server().actor();
  const models = await Promise.all(Array.from({ length: 10 }, (_, i) => createModel(user, { qualityScore: i / 20 })));
  const watcher = startReader(user, user.userId);
  const rounds = await Promise.all(
    Array.from({ length: 60 }, (_, i) => server().call("grpc", "activateVoiceModel", { modelId: models[i % 10].id }, user.token)),
  );
  const { violations } = await watcher.stop();
  expect(violations).toEqual([]);
  for (const outcome of rounds) expect([0, Code.AlreadyExists]).toContain(outcome.code);
  const active = (await user.grpc.listVoiceModels({ isActive: true })).message.models;
  expect(active).toHaveLength(1);
});
