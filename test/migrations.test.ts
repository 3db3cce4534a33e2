// The schema: migrations are idempotent and safe to run from many instances at once, and the
// database itself holds the activation invariants (not only the service code).
import type { Knex } from "knex";
import { openDatabase, type Database } from "../src/db/connection";
import { migrateToLatest } from "../src/db/migrate";
import { migrationSource } from "../src/db/migrations";
import { CAPTURE_METHODS, SPEAKER_KINDS } from "../src/consent/consent-repository";
import { PROVIDERS, SAMPLE_RATES, STATUSES } from "../src/voice-models/constants";
import { createPostgresDatabase, createTestDatabase, type TestDatabase } from "./helpers/database";
import { describeOnPostgres, TEST_DB } from "./helpers/env";

describe(`schema on ${TEST_DB}`, () => {
  let database: TestDatabase;
  let knex: Knex;
  beforeAll(async () => {
    database = await createTestDatabase();
    knex = database.db.knex;
    await knex("model_owners").insert({ user_id: "u1" });
  });
  afterAll(() => database?.dispose());

  const row = (fields: object) => ({ user_id: "u1", provider: "xtts-v2", model_path: "p", ...fields });

  test("running the migrations again applies nothing", async () => {
    expect(await migrateToLatest(knex)).toEqual([]);
    const names = await migrationSource.getMigrations([]);
    const { n } = (await knex("knex_migrations").count("* as n").first())!;
    expect(Number(n)).toBe(names.length);
  });

  test("the partial unique index refuses a second active model of a user", async () => {
    await knex("voice_models").insert(row({ is_active: true }));
    await expect(knex("voice_models").insert(row({ is_active: true }))).rejects.toMatchObject({ code: "23505" });
    // A deleted or inactive one is fine.
    await knex("voice_models").insert(row({ is_active: false }));
    await knex("voice_models").where({ user_id: "u1" }).update({ is_active: false });
  });

  test.each([
    ["an active model that is not completed", { is_active: true, status: "pending" }],
    ["an active deleted model", { is_active: true, deleted_at: new Date() }],
    ["an unknown provider", { provider: "espeak" }],
    ["an unknown status", { status: "done" }],
    ["an unsupported sample rate", { sample_rate: 11025 }],
    ["a score above 1", { quality_score: 1.5 }],
    ["metadata that is not an object", { metadata: JSON.stringify([1, 2]) }],
  ])("check constraints refuse %s", async (_name, fields) => {
    await expect(knex("voice_models").insert(row(fields))).rejects.toMatchObject({ code: "23514" });
  });

  // The migrations hold frozen literals; the constants the code validates with must match them
  // (a new value needs a new migration).
  test.each([
    ["provider", PROVIDERS],
    ["status", STATUSES],
    ["sample_rate", SAMPLE_RATES],
  ] as const)("the database accepts every %s the code declares, in one transaction rolled back", async (column, values) => {
    await knex.transaction(async (trx) => {
      for (const value of values) await trx("voice_models").insert(row({ [column]: value }));
      await trx.rollback();
    }).catch((error: unknown) => {
      if (error !== undefined) throw error;
    });
  });

  test("the database accepts every speaker kind and capture method the consent code declares, and nothing else", async () => {
    const consent = (fields: object) => ({
      user_id: "u1",
      speaker_kind: "owner",
      statement_text: "s",
      statement_version: "v",
      capture_method: "other",
      captured_at: new Date(),
      recorded_by: "u1",
      ...fields,
    });
    await knex.transaction(async (trx) => {
      for (const kind of SPEAKER_KINDS) await trx("voice_model_consents").insert(consent({ speaker_kind: kind, speaker_name: kind === "other" ? "n" : null }));
      for (const method of CAPTURE_METHODS) await trx("voice_model_consents").insert(consent({ capture_method: method }));
      await trx.rollback();
    }).catch((error: unknown) => {
      if (error !== undefined) throw error;
    });
    for (const bad of [{ capture_method: "fax" }, { speaker_kind: "robot" }, { speaker_kind: "other" }]) {
      await expect(knex("voice_model_consents").insert(consent(bad))).rejects.toMatchObject({ code: "23514" });
    }
  });

  test("quality scores are stored with 3 decimals and read back as numbers", async () => {
    const [inserted] = await knex("voice_models").insert(row({ quality_score: 0.4 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.1 * 0.5 })).returning("*");
    expect(inserted.quality_score).toBe(0.5);
    const { n } = (await knex("voice_models").where("user_id", "u1").count("* as n").first())!;
    expect(typeof n).toBe("number");
  });
});

describeOnPostgres("migrations from several instances at once", () => {
  test("instances migrating an empty database together all succeed, each migration applied once", async () => {
    const database = await createPostgresDatabase();
    const instances: Database[] = [];
    try {
      for (let i = 0; i < 5; i++) instances.push(await openDatabase({ url: database.url, poolMax: 2 }));
      const applied = await Promise.all(instances.map((db) => migrateToLatest(db.knex)));
      const names = await migrationSource.getMigrations([]);
      expect(applied.flat().sort()).toEqual([...names].sort());
      const knex = instances[0].knex;
      const rows = await knex("knex_migrations").select("name");
      expect(rows.map((r) => r.name).sort()).toEqual([...names].sort());
      expect(await knex("knex_migrations_lock").select("is_locked")).toEqual([{ is_locked: 0 }]);
      // And later runs still get the lock.
      expect(await migrateToLatest(instances[1].knex)).toEqual([]);
    } finally {
      await Promise.all(instances.map((db) => db.close()));
      await database.drop();
    }
  });
});

describe(`migration 006-lineage on ${TEST_DB}`, () => {
  let db: Database;
  let dropDatabase: (() => Promise<void>) | undefined;
  const before006: Knex.MigrationSource<string> = {
    ...migrationSource,
    getMigrations: async (dirs) => (await migrationSource.getMigrations(dirs)).filter((name) => name < "006"),
  };
  const ids = {
    a1: "00000000-0000-4000-8000-00000000000a",
    a2: "00000000-0000-4000-8000-00000000000b",
    a3: "00000000-0000-4000-8000-00000000000c",
    a4: "00000000-0000-4000-8000-00000000000d",
    b1: "00000000-0000-4000-8000-000000000001",
  };

  beforeAll(async () => {
    if (TEST_DB === "pglite") db = await openDatabase({});
    else {
      const created = await createPostgresDatabase();
      dropDatabase = created.drop;
      db = await openDatabase({ url: created.url, poolMax: 2 });
    }
    await db.knex.migrate.latest({ migrationSource: before006 });
  });
  afterAll(async () => {
    await db?.close();
    await dropDatabase?.();
  });

  test("numbers existing models per user by created_at then id, sets each counter past them, and numbers new rows", async () => {
    const knex = db.knex;
    await knex("model_owners").insert([{ user_id: "mig-a" }, { user_id: "mig-b" }, { user_id: "mig-none" }]);
    const at = (iso: string) => new Date(iso);
    const model = (id: string, user_id: string, created_at: Date, extra: object = {}) => ({ id, user_id, provider: "xtts-v2", model_path: `p/${id}`, created_at, ...extra });
    await knex("voice_models").insert([
      model(ids.a3, "mig-a", at("2024-03-01T00:00:00Z")),
      model(ids.a2, "mig-a", at("2024-01-01T00:00:00Z")), // same time as a1: the lower id first
      model(ids.a1, "mig-a", at("2024-01-01T00:00:00Z")),
      model(ids.a4, "mig-a", at("2024-02-01T00:00:00Z"), { deleted_at: at("2024-04-01T00:00:00Z") }),
      model(ids.b1, "mig-b", at("2023-01-01T00:00:00Z")),
    ]);
    await knex("cache_voice_models").insert({ cache_key: "voice_model:x", user_id: "mig-a", value: JSON.stringify({ stale: true }), expires_at: at("2999-01-01T00:00:00Z") });

    expect(await migrateToLatest(knex)).toContain("006-lineage");

    const numbers = await knex("voice_models").orderBy("id").select("id", "user_id", "model_number", "parent_model_id");
    expect(numbers).toEqual([
      { id: ids.b1, user_id: "mig-b", model_number: 1, parent_model_id: null },
      { id: ids.a1, user_id: "mig-a", model_number: 1, parent_model_id: null },
      { id: ids.a2, user_id: "mig-a", model_number: 2, parent_model_id: null },
      { id: ids.a3, user_id: "mig-a", model_number: 4, parent_model_id: null },
      { id: ids.a4, user_id: "mig-a", model_number: 3, parent_model_id: null },
    ]);
    const counters = await knex("model_owners").orderBy("user_id").select("user_id", "last_model_number");
    expect(counters).toEqual([
      { user_id: "mig-a", last_model_number: 4 },
      { user_id: "mig-b", last_model_number: 1 },
      { user_id: "mig-none", last_model_number: 0 },
    ]);
    expect(await knex("cache_voice_models").count("* as n").first()).toEqual({ n: 0 });

    // A row inserted without a number gets the next one; with one, the counter moves past it.
    const [next] = await knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000a5", "mig-a", new Date(), { parent_model_id: ids.a3 })).returning("*");
    expect(next.model_number).toBe(5);
    const [kept] = await knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000b9", "mig-b", new Date(), { model_number: 9 })).returning("*");
    expect(kept.model_number).toBe(9);
    const [afterKept] = await knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000ba", "mig-b", new Date())).returning("*");
    expect(afterKept.model_number).toBe(10);
    expect((await knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000c1", "mig-none", new Date())).returning("*"))[0].model_number).toBe(1);
    // Several rows in one statement: consecutive numbers; a number removed with its row is not given again.
    const many = await knex("voice_models")
      .insert(["bb", "bc", "bd"].map((tail) => model(`00000000-0000-4000-8000-0000000000${tail}`, "mig-b", new Date())))
      .returning("model_number");
    expect(many.map((r) => r.model_number)).toEqual([11, 12, 13]);
    await knex("voice_models").where({ id: "00000000-0000-4000-8000-0000000000bd" }).delete();
    expect((await knex("model_owners").where({ user_id: "mig-b" }).first()).last_model_number).toBe(13);
    expect((await knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000be", "mig-b", new Date())).returning("*"))[0].model_number).toBe(14);

    // One number per user; a parent is a real model, never the model itself; purging it clears the link.
    await expect(knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000a6", "mig-a", new Date(), { model_number: 2 }))).rejects.toMatchObject({ code: "23505" });
    await expect(knex("voice_models").insert(model("00000000-0000-4000-8000-0000000000a7", "mig-a", new Date(), { parent_model_id: "00000000-0000-4000-8000-00000000ffff" }))).rejects.toMatchObject({ code: "23503" });
    await expect(knex("voice_models").where({ id: ids.a1 }).update({ parent_model_id: ids.a1 })).rejects.toMatchObject({ code: "23514" });
    await knex("voice_models").where({ id: ids.a3 }).delete();
    expect((await knex("voice_models").where({ id: next.id }).first()).parent_model_id).toBeNull();
  });
});
