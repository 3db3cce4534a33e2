import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import type { VoiceModel } from "../gen/voicemodel/v1/voice_model_pb";
import { expectGrpcError } from "./helpers/expect-error";
import { createModel, sleep, useTestServer, type Actor } from "./helpers/harness";

const server = useTestServer();

/** The list order: active first, then quality (high first), then newest, then id. */
function expectedOrder(models: VoiceModel[]): string[] {
  return [...models]
    .sort(
      (a, b) =>
        Number(b.isActive) - Number(a.isActive) ||
        b.qualityScore - a.qualityScore ||
        timestampDate(b.createdAt!).getTime() - timestampDate(a.createdAt!).getTime() ||
        (a.id < b.id ? 1 : -1),
    )
    .map((m) => m.id);
}

async function current(actor: Actor, ids: string[]): Promise<VoiceModel[]> {
  return Promise.all(ids.map(async (modelId) => (await actor.grpc.getVoiceModel({ modelId })).message.model!));
}

/** Every page of a listing, following nextPageToken; `between` runs before each next page. */
async function allPages(actor: Actor, request: { limit: number; [k: string]: unknown }, between?: (page: number) => Promise<void>) {
  const pages: VoiceModel[][] = [];
  let pageToken: string | undefined;
  for (;;) {
    const { message } = await actor.grpc.listVoiceModels({ ...request, pageToken });
    pages.push(message.models);
    if (!message.nextPageToken) break;
    expect(message.models).toHaveLength(request.limit);
    pageToken = message.nextPageToken;
    if (between) await between(pages.length);
    if (pages.length > 50) throw new Error("paging does not end");
  }
  return pages;
}

describe("ListVoiceModels", () => {
  let alice: Actor;
  let models: VoiceModel[];

  beforeAll(async () => {
    alice = await server().actor();
    const specs = [
      { provider: "xtts-v2", qualityScore: 0.5 }, // first: active until a model above 0.8 arrives
      { provider: "openai-tts", qualityScore: 0.7 },
      { provider: "google-cloud-tts", qualityScore: 0.7 }, // tie with the one before: newer first
      { provider: "xtts-v2", qualityScore: 0.3, status: "pending" },
      { provider: "openai-tts", qualityScore: 0.9, status: "failed" },
      { provider: "xtts-v2", qualityScore: 0.2 },
      { provider: "google-cloud-tts", qualityScore: 0.85 }, // takes over
      { provider: "xtts-v2", qualityScore: 0.6, status: "training" },
    ];
    const created: VoiceModel[] = [];
    for (const spec of specs) {
      created.push(await createModel(alice, spec));
      await sleep(5); // distinct created_at, so "newest first" decides ties
    }
    models = await current(alice, created.map((m) => m.id));
  });

  test("orders active first, then quality, then newest; total counts all", async () => {
    const { message } = await alice.grpc.listVoiceModels({});
    expect(message.total).toBe(models.length);
    expect(message.models.map((m) => m.id)).toEqual(expectedOrder(models));
    expect(message.models[0]).toMatchObject({ qualityScore: 0.85, isActive: true });
    expect(message.models.filter((m) => m.isActive)).toHaveLength(1);
    expect(message.nextPageToken).toBe("");
  });

  test.each([
    ["provider", { provider: "xtts-v2" }, (m: VoiceModel) => m.provider === "xtts-v2"],
    ["isActive true", { isActive: true }, (m: VoiceModel) => m.isActive],
    ["isActive false", { isActive: false }, (m: VoiceModel) => !m.isActive],
    ["minQualityScore (inclusive)", { minQualityScore: 0.7 }, (m: VoiceModel) => m.qualityScore >= 0.7],
    ["minQualityScore 0", { minQualityScore: 0 }, () => true],
    ["status", { status: "completed" }, (m: VoiceModel) => m.status === "completed"],
    ["status pending", { status: "pending" }, (m: VoiceModel) => m.status === "pending"],
    ["several filters", { provider: "xtts-v2", status: "completed", minQualityScore: 0.25 }, (m: VoiceModel) => m.provider === "xtts-v2" && m.status === "completed" && m.qualityScore >= 0.25],
  ])("filter: %s", async (_name, filter, predicate) => {
    const expected = expectedOrder(models.filter(predicate));
    const { message } = await alice.grpc.listVoiceModels(filter);
    expect(message.models.map((m) => m.id)).toEqual(expected);
    expect(message.total).toBe(expected.length);
  });

  test("a filter matching nothing gives no models and total 0", async () => {
    const { message } = await alice.grpc.listVoiceModels({ minQualityScore: 0.99 });
    expect(message).toMatchObject({ models: [], total: 0, nextPageToken: "" });
  });

  test("limit and offset page through the order; total ignores them", async () => {
    const order = expectedOrder(models);
    const { message } = await alice.grpc.listVoiceModels({ limit: 3, offset: 2 });
    expect(message.models.map((m) => m.id)).toEqual(order.slice(2, 5));
    expect(message.total).toBe(models.length);
    const past = await alice.grpc.listVoiceModels({ limit: 3, offset: 100 });
    expect(past.message.models).toEqual([]);
    expect(past.message.total).toBe(models.length);
  });

  test("pageToken pages through every row once, in order", async () => {
    const pages = await allPages(alice, { limit: 3 });
    expect(pages.map((p) => p.length)).toEqual([3, 3, 2]);
    expect(pages.flat().map((m) => m.id)).toEqual(expectedOrder(models));
  });

  test("pageToken keeps its filters", async () => {
    const pages = await allPages(alice, { limit: 2, provider: "xtts-v2" });
    expect(pages.flat().map((m) => m.id)).toEqual(expectedOrder(models.filter((m) => m.provider === "xtts-v2")));
  });

  describe("orderBy", () => {
    const created = (m: VoiceModel) => timestampDate(m.createdAt!).getTime();
    const byCreated = (a: VoiceModel, b: VoiceModel) => created(a) - created(b) || (a.id < b.id ? -1 : 1);
    const byQuality = (a: VoiceModel, b: VoiceModel) => a.qualityScore - b.qualityScore || byCreated(a, b);
    const orders: Array<[string, (a: VoiceModel, b: VoiceModel) => number]> = [
      ["created_at", byCreated],
      ["created_at asc", byCreated],
      ["created_at desc", (a, b) => byCreated(b, a)],
      ["createdAt desc", (a, b) => byCreated(b, a)],
      ["quality_score", byQuality],
      ["  quality_score   DESC ", (a, b) => byQuality(b, a)],
      ["qualityScore desc", (a, b) => byQuality(b, a)],
    ];

    test.each(orders)("%j sorts the whole list and its keyset pages alike", async (orderBy, compare) => {
      const expected = [...models].sort(compare).map((m) => m.id);
      const { message } = await alice.grpc.listVoiceModels({ orderBy });
      expect(message.models.map((m) => m.id)).toEqual(expected);
      const pages = await allPages(alice, { limit: 3, orderBy });
      expect(pages.flat().map((m) => m.id)).toEqual(expected);
      const offsetPage = await alice.grpc.listVoiceModels({ orderBy, limit: 3, offset: 3 });
      expect(offsetPage.message.models.map((m) => m.id)).toEqual(expected.slice(3, 6));
    });

    test("an empty orderBy is the default order, and its tokens open without one", async () => {
      const { message } = await alice.grpc.listVoiceModels({ orderBy: "", limit: 3 });
      expect(message.models.map((m) => m.id)).toEqual(expectedOrder(models).slice(0, 3));
      const next = await alice.grpc.listVoiceModels({ limit: 3, pageToken: message.nextPageToken });
      expect(next.message.models.map((m) => m.id)).toEqual(expectedOrder(models).slice(3, 6));
    });

    test.each([
      ["created_at desc", "quality_score desc"],
      ["created_at desc", "created_at asc"],
      ["created_at desc", ""],
      ["", "quality_score desc"],
    ])("a token minted with %j does not open with %j", async (mintedWith, usedWith) => {
      const { message } = await alice.grpc.listVoiceModels({ limit: 2, orderBy: mintedWith });
      await expectGrpcError(alice.grpc.listVoiceModels({ limit: 2, orderBy: usedWith, pageToken: message.nextPageToken }), {
        code: Code.InvalidArgument,
        reason: "INVALID_ARGUMENT",
        field: "pageToken",
      });
    });

    test.each(["name", "created_at sideways", "quality_score desc, created_at", "id", "is_active desc", "created_at desc extra"])(
      "%j is INVALID_ARGUMENT naming orderBy",
      async (orderBy) => {
        await expectGrpcError(alice.grpc.listVoiceModels({ orderBy }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "orderBy" });
      },
    );
  });

  test("a page exactly filled ends with an empty page, never a repeat", async () => {
    const pages = await allPages(alice, { limit: 4 });
    const ids = pages.flat().map((m) => m.id);
    expect(ids).toEqual(expectedOrder(models));
  });

  test("showDeleted includes deleted models, with deletedAt", async () => {
    const bob = await server().actor();
    const kept = await createModel(bob);
    const gone = await createModel(bob, { qualityScore: 0.4 });
    await bob.grpc.deleteVoiceModel({ modelId: gone.id });
    const live = await bob.grpc.listVoiceModels({});
    expect(live.message.models.map((m) => m.id)).toEqual([kept.id]);
    expect(live.message.total).toBe(1);
    const all = await bob.grpc.listVoiceModels({ showDeleted: true });
    expect(all.message.total).toBe(2);
    const deleted = all.message.models.find((m) => m.id === gone.id)!;
    expect(deleted.deletedAt).toBeDefined();
    expect(all.message.models.find((m) => m.id === kept.id)!.deletedAt).toBeUndefined();
    expect((await bob.grpc.listVoiceModels({ showDeleted: false })).message.total).toBe(1);
  });

  test("a user sees only their own models", async () => {
    const carol = await server().actor();
    const { message } = await carol.grpc.listVoiceModels({});
    expect(message).toMatchObject({ models: [], total: 0 });
  });
});

describe("ListVoiceModels limits", () => {
  let dave: Actor;
  beforeAll(async () => {
    dave = await server().actor();
    await Promise.all(Array.from({ length: 23 }, (_, i) => createModel(dave, { qualityScore: i / 100 })));
  });

  test.each([
    ["absent", undefined],
    ["0", 0],
  ])("limit %s means 20", async (_name, limit) => {
    const { message } = await dave.grpc.listVoiceModels({ limit });
    expect(message.models).toHaveLength(20);
    expect(message.total).toBe(23);
    expect(message.nextPageToken).not.toBe("");
  });

  test("limit 100 is allowed", async () => {
    const { message } = await dave.grpc.listVoiceModels({ limit: 100 });
    expect(message.models).toHaveLength(23);
    expect(message.nextPageToken).toBe("");
  });

  test("limit 1 pages one by one", async () => {
    const pages = await allPages(dave, { limit: 1 });
    // A last page that is exactly full still carries a token; the page after it is empty.
    expect(pages.filter((p) => p.length > 0)).toHaveLength(23);
    expect(pages.length).toBeLessThanOrEqual(24);
    expect(new Set(pages.flat().map((m) => m.id)).size).toBe(23);
  });

  test.each([101, 1000, -1])("limit %i is INVALID_ARGUMENT", async (limit) => {
    await expectGrpcError(dave.grpc.listVoiceModels({ limit }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "limit", message: /limit/ });
  });
});

describe("pageToken", () => {
  test("rows inserted between pages never make an unchanged row repeat or go missing", async () => {
    const erin = await server().actor();
    // An active model above everything, so later inserts (all <= 0.8) never change activation.
    const originals: VoiceModel[] = [await createModel(erin, { qualityScore: 0.8 })];
    for (let i = 0; i < 24; i++) originals.push(await createModel(erin, { qualityScore: (i * 3 + 5) / 100 }));
    const inserted: string[] = [];
    const pages = await allPages(erin, { limit: 5 }, async (page) => {
      // Rows that sort before the cursor, after it, and equal to rows already seen.
      for (const qualityScore of [0.79, 0.01, 0.5, (page * 7) / 100]) {
        inserted.push((await createModel(erin, { qualityScore })).id);
      }
    });
    const seen = pages.flat().map((m) => m.id);
    expect(new Set(seen).size).toBe(seen.length); // nothing twice
    for (const model of originals) expect(seen.filter((id) => id === model.id)).toHaveLength(1);
    // Every row listed is one of the user's.
    const all = new Set([...originals.map((m) => m.id), ...inserted]);
    for (const id of seen) expect(all.has(id)).toBe(true);
    // Each page is in the list order.
    for (const page of pages) expect(page.map((m) => m.id)).toEqual(expectedOrder(page));
  });

  test("with a non-zero offset it is INVALID_ARGUMENT", async () => {
    const frank = await server().actor();
    for (let i = 0; i < 3; i++) await createModel(frank);
    const { message } = await frank.grpc.listVoiceModels({ limit: 1 });
    await expectGrpcError(frank.grpc.listVoiceModels({ limit: 1, offset: 1, pageToken: message.nextPageToken }), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "offset",
    });
    // offset 0 is fine with a token.
    const next = await frank.grpc.listVoiceModels({ limit: 1, offset: 0, pageToken: message.nextPageToken });
    expect(next.message.models).toHaveLength(1);
  });

  test.each([
    ["another provider", { provider: "openai-tts" }],
    ["isActive", { isActive: false }],
    ["minQualityScore", { minQualityScore: 0.1 }],
    ["status", { status: "completed" }],
    ["showDeleted", { showDeleted: true }],
  ])("from other filters (%s) it is INVALID_ARGUMENT", async (_name, filters) => {
    const gina = await server().actor();
    for (let i = 0; i < 3; i++) await createModel(gina, { provider: "xtts-v2" });
    const { message } = await gina.grpc.listVoiceModels({ limit: 1, provider: "xtts-v2" });
    await expectGrpcError(gina.grpc.listVoiceModels({ limit: 1, provider: "xtts-v2", ...filters, pageToken: message.nextPageToken }), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "pageToken",
    });
  });

  test("another user's token is INVALID_ARGUMENT", async () => {
    const hank = await server().actor();
    const ivy = await server().actor();
    for (let i = 0; i < 2; i++) await createModel(hank);
    const { message } = await hank.grpc.listVoiceModels({ limit: 1 });
    await expectGrpcError(ivy.grpc.listVoiceModels({ limit: 1, pageToken: message.nextPageToken }), {
      code: Code.InvalidArgument,
      reason: "INVALID_ARGUMENT",
      field: "pageToken",
    });
  });

  test.each([
    ["garbage", "not-a-token"],
    ["base64 of junk", Buffer.from("hello").toString("base64url")],
    ["a JSON array of the wrong shape", Buffer.from(JSON.stringify(["x", 1, 2])).toString("base64url")],
    ["a forged cursor", Buffer.from(JSON.stringify(["forged-hash", 1, 500, 0, "00000000-0000-4000-8000-000000000000"])).toString("base64url")],
    ["a cursor with SQL", Buffer.from(JSON.stringify(["x", 1, 500, 0, "'; drop table voice_models; --"])).toString("base64url")],
  ])("%s is INVALID_ARGUMENT", async (_name, pageToken) => {
    const jack = await server().actor();
    await createModel(jack);
    await expectGrpcError(jack.grpc.listVoiceModels({ pageToken }), { code: Code.InvalidArgument, reason: "INVALID_ARGUMENT", field: "pageToken" });
    expect((await jack.grpc.listVoiceModels({})).message.total).toBe(1);
  });
});
