// Builds the web console (console/) into dist/console: one bundled script, one stylesheet and the
// page. `npm run build:console` always builds; bin/run.js calls ensureFresh() before `npm start`,
// which builds only when an input is newer than the output (a few stat calls when fresh).
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const outDir = path.join(root, "dist", "console");
const stamp = path.join(outDir, ".built");
// What the bundle is made of: the console's own files, the generated contract, the lock file.
const inputs = [path.join(root, "console"), path.join(root, "gen"), path.join(root, "package-lock.json")];

function newestMtime(target) {
  const stat = fs.statSync(target, { throwIfNoEntry: false });
  if (!stat) return 0;
  if (!stat.isDirectory()) return stat.mtimeMs;
  let newest = stat.mtimeMs;
  for (const entry of fs.readdirSync(target)) newest = Math.max(newest, newestMtime(path.join(target, entry)));
  return newest;
}

function isFresh() {
  const built = fs.statSync(stamp, { throwIfNoEntry: false });
  if (!built) return false;
  return inputs.every((input) => newestMtime(input) <= built.mtimeMs);
}

/** Each file is written beside its target and renamed over it: a server reading the folder never sees half a file. */
function writeAtomic(file, contents) {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, contents);
  fs.renameSync(tmp, file);
}

function build() {
  const esbuild = require("esbuild");
  fs.mkdirSync(outDir, { recursive: true });
  const result = esbuild.buildSync({
    entryPoints: { app: path.join(root, "console", "src", "main.ts"), console: path.join(root, "console", "console.css") },
    bundle: true,
    minify: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    outdir: outDir,
    write: false,
    logLevel: "error",
    legalComments: "linked",
  });
  for (const file of result.outputFiles) writeAtomic(file.path, file.contents);
  writeAtomic(path.join(outDir, "index.html"), fs.readFileSync(path.join(root, "console", "index.html")));
  writeAtomic(stamp, new Date().toISOString() + "\n");
}

/** Builds when dist/console is missing or older than its inputs; quiet when fresh. */
function ensureFresh() {
  if (isFresh()) return false;
  build();
  return true;
}

module.exports = { build, ensureFresh, isFresh, outDir };

if (require.main === module) {
  const t0 = Date.now();
  build();
  process.stdout.write(`console built into ${path.relative(root, outDir)} in ${Date.now() - t0} ms\n`);
}
