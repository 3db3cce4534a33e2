// The schema: migrations are idempotent and safe to run from many instances at once, and the
// database itself holds the activation invariants (not only the service code).
import type { Knex } from "knex";
import { openDatabase, type Database } from "../src/db/connection";
import { migrateToLatest } from "../src/db/migrate";
import { migrationSource } from "../src/db/migrations";
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
