import { Code } from "@connectrpc/connect";
import { expectGrpcError, expectRpcError } from "../helpers/expect-error";
import { modelInput, sleep, uniqueUser, useTestServer } from "../helpers/harness";

// Small limits so the tests reach them quickly; the defaults (5/h, 20/h, 60/h, 2/day) are the
// same code path with other numbers.
const server = useTestServer({
  env: {
    RATE_LIMITS_ENABLED: "true",
    RATE_LIMIT_CREATE: "3/3600",
    RATE_LIMIT_UPDATE: "2/3600",
    RATE_LIMIT_ANALYTICS: "2/2",
  },
});

const countModels = async (userId: string) =>
  Number((await server().db.knex("voice_models").where("user_id", userId).count("* as n").first())!.n);

test("creation stops at the limit with RESOURCE_EXHAUSTED and retry-after; the refused call changes nothing", async () => {
  const alice = await server().actor();
  await alice.grpc.createVoiceModel(modelInput());
  await alice.connect.createVoiceModel(modelInput());
  expect((await server().rpcJson("CreateVoiceModel", modelInput(), alice.token)).status).toBe(200);

  const error = await expectGrpcError(alice.grpc.createVoiceModel(modelInput()), { code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
  const retryAfter = Number(error.trailers.get("retry-after")[0]);
  expect(retryAfter).toBeGreaterThan(3500);
  expect(retryAfter).toBeLessThanOrEqual(3600);

  const json = await server().rpcJson("CreateVoiceModel", modelInput(), alice.token);
  expect(json.status).toBe(429);
  expect(Number(json.headers.get("retry-after"))).toBeGreaterThan(3500);
  expect(json.body.code).toBe("resource_exhausted");
  expect(await countModels(alice.userId)).toBe(3);
});

test("invalid calls do not count; limits are per target user; service and admin are exempt", async () => {
  const bob = await server().actor();
  for (let i = 0; i < 4; i++) {
    await expectGrpcError(bob.grpc.createVoiceModel(modelInput({ provider: "nope" })), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT" });
  }
  // A user naming someone else is refused as ACCESS_DENIED and does not count for either.
  await expectGrpcError(bob.grpc.createVoiceModel(modelInput({ userId: uniqueUser() })), { code: Code.PermissionDenied, reason: "ACCESS_DENIED" });
  for (let i = 0; i < 3; i++) await bob.grpc.createVoiceModel(modelInput());
  await expectGrpcError(bob.grpc.createVoiceModel(modelInput()), { code: Code.ResourceExhausted, reason: "RATE_LIMITED" });

  const carol = await server().actor();
  await carol.grpc.createVoiceModel(modelInput());

  const service = await server().serviceActor();
  const admin = await server().adminActor();
  for (let i = 0; i < 3; i++) {
    await service.grpc.createVoiceModel(modelInput({ userId: bob.userId }));
    await admin.grpc.createVoiceModel(modelInput({ userId: bob.userId }));
  }
  expect(await countModels(bob.userId)).toBe(9);
});

test("updates have their own limit; a refused update leaves the model as it was", async () => {
  const dave = await server().actor();
  const { message } = await dave.grpc.createVoiceModel(modelInput({ qualityScore: 0.5 }));
  const modelId = message.model!.id;
  await dave.grpc.updateVoiceModel({ modelId, qualityScore: 0.6 });
  await dave.connect.updateVoiceModel({ modelId, qualityScore: 0.7 });
  expectRpcError(await server().call("connect", "updateVoiceModel", { modelId, qualityScore: 0.9 }, dave.token), {
    code: Code.ResourceExhausted,
    reason: "RATE_LIMITED",
  });
  expect((await dave.grpc.getVoiceModel({ modelId })).message.model!.qualityScore).toBe(0.7);
  // Creation is a separate budget.
  await dave.grpc.createVoiceModel(modelInput());
});

test("the window slides: calls are allowed again once old ones leave it", async () => {
  const erin = await server().actor();
  await erin.grpc.getVoiceModelAnalytics({});
  await erin.grpc.getVoiceModelAnalytics({});
  const error = await expectGrpcError(erin.grpc.getVoiceModelAnalytics({}), { code: Code.ResourceExhausted, reason: "RATE_LIMITED" });
  expect(Number(error.trailers.get("retry-after")[0])).toBeLessThanOrEqual(2);
  await sleep(2_100);
  await erin.grpc.getVoiceModelAnalytics({});
});

test("concurrent calls never exceed the limit", async () => {
  const frank = await server().actor();
  const outcomes = await Promise.all(Array.from({ length: 12 }, (_, i) => server().call(i % 2 ? "grpc" : "connect", "createVoiceModel", modelInput(), frank.token)));
  expect(outcomes.filter((o) => o.code === 0)).toHaveLength(3);
  expect(outcomes.filter((o) => o.code === Code.ResourceExhausted)).toHaveLength(9);
  expect(await countModels(frank.userId)).toBe(3);
});

test("refusals are counted in /metrics and audited", async () => {
  const metrics = (await server().fetch("/metrics")).text;
  const refused = /^voice_model_rate_limit_refusals_total\{operation="create"\} (\d+)/m.exec(metrics);
  expect(Number(refused?.[1])).toBeGreaterThanOrEqual(9);
  const admin = await server().adminActor();
  const { message } = await admin.grpc.listAuditEvents({ action: "rate.limited", limit: 1 });
  expect(message.events[0]).toMatchObject({ resultCode: "RATE_LIMITED" });
});
