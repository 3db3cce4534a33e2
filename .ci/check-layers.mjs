#!/usr/bin/env node
// Imports in src/ point down only: a room (a folder of src/, or a file at its top) may import
// rooms of lower layers and, on its own layer, only the pairs listed in SAME_LAYER (the README's
// layout section says why each is there). The generated contract (gen/) is below every room.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const src = path.join(root, "src");

// Lowest first.
const LAYERS = [
  ["errors", "config", "logger", "data-dir-secret"],
  ["db", "storage", "auth", "jobs", "paging"],
  ["voice-models"],
  ["cache", "audit", "metrics", "rate-limit", "events"],
  ["usage", "sharing", "cleanup", "model-files", "backups", "user-data", "consent"],
  ["rpc"],
  ["server"],
  ["app", "start-banner"],
  ["main"],
];

const SAME_LAYER = new Set([
  "audit -> metrics", // housekeeping counts what it removed
  "backups -> model-files", // a backup holds model files and restore writes them back
  "user-data -> model-files", // erasure deletes a user's files through their owner
  "user-data -> backups", // and their backups through theirs
  "user-data -> sharing", // and their shares, telling the sharees
  "consent -> model-files", // a withdrawal deletes the model's rows and file through their owner
  "consent -> sharing", // and ends its shares, telling the sharees
  "consent -> backups", // and rewrites the backups that hold it
]);

const layerOf = new Map(LAYERS.flatMap((rooms, layer) => rooms.map((room) => [room, layer])));

function files(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return files(full);
    return entry.name.endsWith(".ts") ? [full] : [];
  });
}

/** The room of a path under src/, or undefined outside it (gen/, node_modules). */
function roomOf(file) {
  const relative = path.relative(src, file);
  if (relative.startsWith("..")) return undefined;
  return relative.split(path.sep)[0].replace(/\.ts$/, "");
}

const problems = [];
for (const file of files(src)) {
  const from = roomOf(file);
  const text = fs.readFileSync(file, "utf8");
  for (const match of text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^import\s+)["'](\.{1,2}\/[^"']+)["']/gm)) {
    const to = roomOf(path.resolve(path.dirname(file), match[1]));
    if (to === undefined || to === from) continue;
    const where = `${path.relative(root, file)} imports ${match[1]}`;
    if (!layerOf.has(from) || !layerOf.has(to)) {
      problems.push(`${where}: room "${layerOf.has(from) ? to : from}" has no layer in .ci/check-layers.mjs`);
    } else if (layerOf.get(to) > layerOf.get(from)) {
      problems.push(`${where}: ${from} (layer ${layerOf.get(from)}) may not import ${to} (layer ${layerOf.get(to)})`);
    } else if (layerOf.get(to) === layerOf.get(from) && !SAME_LAYER.has(`${from} -> ${to}`)) {
      problems.push(`${where}: ${from} and ${to} are on one layer; list the pair in SAME_LAYER with why, or move the code`);
    }
  }
}

if (problems.length > 0) {
  process.stderr.write(`${problems.join("\n")}\n${problems.length} import(s) run against the layers\n`);
  process.exit(1);
}
process.stdout.write("layers: every import in src/ points down\n");
