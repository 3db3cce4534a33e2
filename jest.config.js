// Jest runs TypeScript through @swc/jest (no type check: `tsc --noEmit` is the type gate).
// PGlite needs NODE_OPTIONS=--experimental-vm-modules; `npm test` (test/run-suites.mjs) sets it.
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  transform: {
    "^.+\\.ts$": [
      "@swc/jest",
      { jsc: { parser: { syntax: "typescript" }, target: "es2022" }, module: { type: "commonjs" } },
    ],
    // jose 6 ships only ES modules, which Jest cannot require on Node 20: compile it to CommonJS.
    "^.+\\.js$": [
      "@swc/jest",
      { jsc: { parser: { syntax: "ecmascript" }, target: "es2022" }, module: { type: "commonjs" } },
    ],
  },
  transformIgnorePatterns: ["/node_modules/(?!jose/)"],
  moduleFileExtensions: ["ts", "js", "json"],
  // Two cores: each test file starts its own server and database.
  maxWorkers: 2,
  // Servers, databases and child processes take seconds to start.
  testTimeout: 60_000,
  slowTestThreshold: 20,
};
