import pg from "pg";

/**
 * The usage data set: one user with 1,000 models and 1,000,000 usage events over 90
 * days, with the lifetime totals and daily roll-ups the service keeps (built here from the events
 * in one pass, as the service would have built them event by event).
 */
export const USAGE_SEED = { user: "bench-usage-user", models: 1_000, events: 1_000_000, days: 90 } as const;

export interface UsageSeed {
  userId: string;
  /** Expected analytics figures, computed from the raw events here. */
  expected: { totalModels: number; totalUsageCount: number };
  /** A few of the user's model ids, for RecordUsage batches. */
  modelIds: string[];
  seconds: number;
}

export async function seedUsage(url: string): Promise<UsageSeed> {
  const started = Date.now();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const u = USAGE_SEED;
  try {
    await client.query("BEGIN");
    await client.query(`INSERT INTO model_owners (user_id) VALUES ($1)`, [u.user]);
    await client.query(
      `INSERT INTO voice_models (user_id, provider, model_path, quality_score, is_active, size_bytes, created_at, updated_at)
       SELECT $1, (ARRAY['xtts-v2', 'google-cloud-tts', 'openai-tts'])[1 + k % 3], 'gs://bench-usage/' || k || '.pth',
              round(0.3 + (k % 600) / 1000.0, 3), k = 0, 50000000 + k * 1000, now() - make_interval(secs => k), now() - make_interval(secs => k)
       FROM generate_series(0, ${u.models - 1}) AS k`,
      [u.user],
    );
    await client.query(
      `INSERT INTO usage_events (model_id, user_id, idempotency_key, payload_hash, characters, latency_ms, cost, quality_rating, used_at, recorded_at)
       SELECT m.ids[1 + i % ${u.models}], $1, 'seed-' || i, md5(i::text), 100 + i % 400, 50 + i % 700, (i % 100) / 10000.0,
              CASE WHEN i % 4 = 0 THEN 1 + i % 5 END, now() - make_interval(secs => (i % (${u.days} * 86400))), now()
       FROM (SELECT array_agg(id ORDER BY created_at) AS ids FROM voice_models WHERE user_id = $1) AS m,
            generate_series(0, ${u.events - 1}) AS i`,
      [u.user],
    );
    const sums = `count(*), sum(cost), sum(latency_ms), sum(coalesce(characters, 0)), sum(coalesce(audio_seconds, 0)),
                  sum(coalesce(quality_rating, 0)), count(quality_rating), max(used_at)`;
    const columns = `usage_count, cost_sum, latency_sum, characters_sum, audio_seconds_sum, rating_sum, rating_count, last_used_at`;
    await client.query(
      `INSERT INTO usage_totals (model_id, ${columns}) SELECT e.model_id, ${sums}
       FROM usage_events e JOIN voice_models m ON m.id = e.model_id WHERE m.user_id = $1 GROUP BY e.model_id`,
      [u.user],
    );
    await client.query(
      `INSERT INTO usage_daily (model_id, day, ${columns}) SELECT e.model_id, (e.used_at AT TIME ZONE 'UTC')::date, ${sums}
       FROM usage_events e JOIN voice_models m ON m.id = e.model_id WHERE m.user_id = $1 GROUP BY 1, 2`,
      [u.user],
    );
    await client.query("COMMIT");
    for (const table of ["voice_models", "usage_events", "usage_totals", "usage_daily"]) await client.query(`VACUUM ANALYZE ${table}`);
    const { rows } = await client.query<{ id: string }>(`SELECT id FROM voice_models WHERE user_id = $1 ORDER BY created_at DESC LIMIT 10`, [u.user]);
    return {
      userId: u.user,
      expected: { totalModels: u.models, totalUsageCount: u.events },
      modelIds: rows.map((r) => r.id),
      seconds: (Date.now() - started) / 1000,
    };
  } catch (error) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw error;
  } finally {
    await client.end();
  }
}
