import type { Knex } from "knex";
import * as voiceModels from "./001-voice-models";

interface Migration {
  up(knex: Knex): Promise<void>;
  down(knex: Knex): Promise<void>;
}

/** Migrations in order. Imported statically so they run the same under tsx, Jest and compiled JS. */
const MIGRATIONS: ReadonlyArray<[name: string, migration: Migration]> = [["001-voice-models", voiceModels]];

export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => MIGRATIONS.map(([name]) => name),
  getMigrationName: (name) => name,
  getMigration: async (name) => MIGRATIONS.find(([n]) => n === name)![1],
};
