import pg from "pg";
import { openDatabase } from "../src/db/connection";
import { migrateToLatest } from "../src/db/migrate";

/**
 * The bench data set: 100,000 models of 10,000 users. Users 0-1999 own 30 models each (60,000),
 * users 2000-9999 own 5 each (40,000), so a user of the first group has more than one page of 20.
 * Per user: model k=0 is the active one (completed, score 0.950, newest); the others score
 * 0.300-0.899; k%10 == 7 is failed, k%10 == 8 training, k%10 == 9 soft-deleted.
 */
export const SEED = { users: 10_000, models: 100_000, bigUsers: 2_000, bigUserModels: 30, smallUserModels: 5 } as const;

export const userName = (n: number) => `bench-user-${String(n).padStart(5, "0")}`;

const ownersSql = (users: number) => `
  INSERT INTO model_owners (user_id, created_at)
  SELECT 'bench-user-' || lpad(u::text, 5, '0'), now() - interval '400 days'
  FROM generate_series(0, ${users - 1}) AS u`;

const modelsSql = (users: number) => `
  INSERT INTO voice_models (user_id, provider, model_path, sample_rate, quality_score, metadata,
                            is_active, status, training_job_id, created_at, updated_at, deleted_at)
  SELECT 'bench-user-' || lpad(u::text, 5, '0'),
         (ARRAY['xtts-v2', 'google-cloud-tts', 'openai-tts'])[1 + (u + k) % 3],
         'gs://bench-models/' || u || '/' || k || '.pth',
         (ARRAY[22050, 24000, 44100])[1 + k % 3],
         CASE WHEN k = 0 THEN 0.950 ELSE round(0.3 + ((u * 31 + k * 17) % 600) / 1000.0, 3) END,
         jsonb_build_object('language', 'en', 'seed', k),
         k = 0,
         CASE WHEN k % 10 = 7 THEN 'failed' WHEN k % 10 = 8 THEN 'training' ELSE 'completed' END,
         'job-' || u || '-' || k,
         ts, ts,
         CASE WHEN k % 10 = 9 THEN ts + interval '1 day' END
  FROM generate_series(0, ${users - 1}) AS u
  CROSS JOIN LATERAL generate_series(0, CASE WHEN u < ${SEED.bigUsers} THEN ${SEED.bigUserModels - 1} ELSE ${SEED.smallUserModels - 1} END) AS k
  CROSS JOIN LATERAL (SELECT now() - make_interval(days => k, secs => u) AS ts) AS t`;

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

async function admin<T>(adminUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

const quoteIdent = (name: string) => {
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name: ${name}`);
  return `"${name}"`;
};

/**
 * Drops (if left over) and creates the bench database; returns its URL. Refuses when something is
 * connected to it: that is another bench running, whose database this would pull away.
 */
export async function createBenchDatabase(adminUrl: string, name: string): Promise<string> {
  await admin(adminUrl, async (c) => {
    const { rows } = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1`, [name]);
    if (Number(rows[0].n) > 0) {
      throw new Error(`database ${name} is in use (${rows[0].n} connections): is another bench running? Set BENCH_DB to another name`);
    }
    await c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${quoteIdent(name)}`);
  });
  return withDatabase(adminUrl, name);
}

export async function dropBenchDatabase(adminUrl: string, name: string): Promise<void> {
  await admin(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`));
}

/** Applies our migrations to a bench database. */
export async function migrate(url: string): Promise<void> {
  const db = await openDatabase({ url });
  try {
    await migrateToLatest(db.knex);
  } finally {
    await db.close();
  }
}

/**
 * Applies our migrations, bulk-inserts the data set, analyzes; returns row counts. More users than
 * SEED.users (the many-users cases) adds users of SEED.smallUserModels models each.
 */
export async function migrateAndSeed(url: string, users: number = SEED.users): Promise<{ owners: number; models: number; active: number }> {
  await migrate(url);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query("BEGIN");
    await client.query(ownersSql(users));
    await client.query(modelsSql(users));
    await client.query("COMMIT");
    await client.query("VACUUM ANALYZE model_owners");
    await client.query("VACUUM ANALYZE voice_models");
    const { rows } = await client.query<{ owners: string; models: string; active: string }>(
      `SELECT (SELECT count(*) FROM model_owners) AS owners, (SELECT count(*) FROM voice_models) AS models,
              (SELECT count(*) FROM voice_models WHERE is_active) AS active`,
    );
    return { owners: Number(rows[0].owners), models: Number(rows[0].models), active: Number(rows[0].active) };
  } finally {
    await client.end();
  }
}

/** What the checks expect for one user: the active model's id and the live model count. */
export async function expectedFor(url: string, userId: string): Promise<{ activeId: string; liveModels: number }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ active_id: string; live: string }>(
      `SELECT (SELECT id FROM voice_models WHERE user_id = $1 AND is_active AND deleted_at IS NULL) AS active_id,
              (SELECT count(*) FROM voice_models WHERE user_id = $1 AND deleted_at IS NULL) AS live`,
      [userId],
    );
    if (!rows[0].active_id) throw new Error(`seed: ${userId} has no active model`);
    return { activeId: rows[0].active_id, liveModels: Number(rows[0].live) };
  } finally {
    await client.end();
  }
}

/**
 * The seed's first `users` users (30 models each) in an embedded data folder, opened the way the
 * service opens it (its lock held meanwhile, so the service must be stopped); migrates first.
 */
export async function seedEmbedded(dataDir: string, users: number): Promise<{ models: number }> {
  const db = await openDatabase({ pgliteDir: dataDir });
  try {
    await migrateToLatest(db.knex);
    await db.knex.transaction(async (trx) => {
      await trx.raw(ownersSql(users));
      await trx.raw(modelsSql(users));
    });
    await db.knex.raw("ANALYZE voice_models");
    const { rows } = await db.knex.raw(`SELECT count(*) AS n FROM voice_models`);
    return { models: Number(rows[0].n) };
  } finally {
    await db.close();
  }
}
