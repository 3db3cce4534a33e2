import type { Knex } from "knex";
import * as voiceModels from "./001-voice-models";
import * as usageAndCache from "./002-usage-and-cache";
import * as modelFiles from "./003-model-files";
import * as governance from "./004-governance";
import * as activationHistory from "./005-activation-history";
import * as lineage from "./006-lineage";
import * as changeEvents from "./007-change-events";
import * as erasureKeys from "./008-erasure-keys";
import * as consents from "./009-consents";
import * as modelFileUploads from "./010-model-file-uploads";

interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** Migrations in order. Imported statically so they run the same under tsx, Jest and compiled JS. */
const MIGRATIONS: ReadonlyArray<[name: string, migration: Migration]> = [
  ["001-voice-models", voiceModels],
  ["002-usage-and-cache", usageAndCache],
  ["003-model-files", modelFiles],
  ["004-governance", governance],
  ["005-activation-history", activationHistory],
  ["006-lineage", lineage],
  ["007-change-events", changeEvents],
  ["008-erasure-keys", erasureKeys],
  ["009-consents", consents],
  ["010-model-file-uploads", modelFileUploads],
];

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => MIGRATIONS.map(([name]) => name),
  getMigrationName: (name) => name,
  getMigration: async (name) => MIGRATIONS.find(([n]) => n === name)![1],
};
