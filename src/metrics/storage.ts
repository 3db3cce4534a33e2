import type { Knex } from "knex";
import * as modelRepo from "../voice-models/repository";

export interface StoredBytes {
  /** Every stored byte: model files (live and deleted-but-retained), backups, and the declared
   * size of models whose file the service does not hold. */
  total: number;
  modelFiles: number;
  backups: number;
  /** size_bytes of models without a stored file (their file lives elsewhere). */
  declared: number;
}

/** The storage figures the metrics and the storage alert share. */
export async function storedBytes(knex: Knex): Promise<StoredBytes> {
  const [{ rows }, declared] = await Promise.all([
    knex.raw(`
      SELECT (SELECT coalesce(sum(stored_bytes), 0) FROM model_files)::float8 AS model_files,
             (SELECT coalesce(sum(stored_bytes), 0) FROM backups)::float8 AS backups`),
    modelRepo.declaredBytes(knex),
  ]);
  const r = rows[0] as { model_files: number; backups: number };
  const modelFiles = Number(r.model_files);
  const backups = Number(r.backups);
  return { total: modelFiles + backups + declared, modelFiles, backups, declared };
}
