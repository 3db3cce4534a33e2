#!/usr/bin/env node
// Runs one of the service's entry points (main, auth/token-cli, db/migrate-cli) in this process:
// from the TypeScript sources through tsx when it is installed (a development checkout), else the
// compiled dist/ (the production image installs no dev dependencies). One process, so a signal
// sent to `npm start` reaches the server itself.
"use strict";
const path = require("node:path");

const root = path.resolve(__dirname, "..");
const entry = process.argv[2];
if (!entry || !/^[a-z/-]+$/.test(entry)) {
  process.stderr.write("usage: node bin/run.js <main|auth/token-cli|db/migrate-cli> [args...]\n");
  process.exit(2);
}
// The entry point reads its own arguments from process.argv.slice(2).
process.argv.splice(2, 1);

let tsx;
try {
  tsx = require.resolve("tsx/cjs/api", { paths: [root] });
} catch {
  tsx = undefined;
}
if (tsx) {
  // A development checkout serves the web console from dist/console: build it when missing or stale.
  if (entry === "main") require(path.join(root, "console", "build.js")).ensureFresh();
  require(tsx).register();
  require(path.join(root, "src", `${entry}.ts`));
} else {
  require(path.join(root, "dist", "src", `${entry}.js`));
}
