#!/usr/bin/env node
// The Dockerfile's runtime stage without a Docker engine: builds dist/ from only what the build
// stage copies, lays out a folder with only what the runtime stage copies, runs its `npm ci
// --omit=dev`, and then, as an unprivileged user, runs `npm run migrate`, the CMD, the HEALTHCHECK
// command and `npm run -s token -- alice` exactly as the Dockerfile and README write them.
// Differences from a real image, on purpose: the build stage links this checkout's node_modules
// instead of a second full `npm ci`; `npm cache clean` is skipped (it would empty this machine's
// shared cache); /data is a temporary folder; the user is `nobody` when no `node` user exists (switched to with setpriv).
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const started = Date.now();
const step = (what) => console.log(`-- ${what} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
const fail = (message) => {
  console.error(`image check FAILED: ${message}`);
  process.exit(1);
};

/** The Dockerfile as stages of [instruction, rest] pairs, continuation lines joined. */
function parseDockerfile(text) {
  const lines = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const stages = [];
  for (const line of lines) {
    const [, instruction, rest] = /^(\S+)\s+(.*)$/.exec(line);
    if (instruction.toUpperCase() === "FROM") stages.push({ from: rest, steps: [] });
    else stages.at(-1).steps.push([instruction.toUpperCase(), rest]);
  }
  return stages;
}

const stages = parseDockerfile(fs.readFileSync(path.join(root, "Dockerfile"), "utf8"));
if (stages.length !== 2) fail(`expected a build and a runtime stage, found ${stages.length}`);
const [buildStage, runStage] = stages;
const get = (stage, name) => stage.steps.filter(([i]) => i === name).map(([, rest]) => rest);
const jsonCommand = (rest, what) => {
  const at = rest.indexOf("[");
  if (at < 0) fail(`${what} is not in exec (JSON array) form: ${rest}`);
  return JSON.parse(rest.slice(at));
};

const work = fs.mkdtempSync(path.join(os.tmpdir(), "image-check-"));
fs.chmodSync(work, 0o755);
const buildDir = path.join(work, "build");
const appDir = path.join(work, "app");
const dataDir = path.join(work, "data");
const homeDir = path.join(work, "home");
for (const dir of [buildDir, appDir, dataDir, homeDir]) fs.mkdirSync(dir, { recursive: true, mode: 0o755 });

/** COPY <src...> <dest> relative to WORKDIR (/app), from this checkout or the build folder. */
function copy(rest, into, fromBuild) {
  const parts = rest.split(/\s+/);
  const from = parts[0].startsWith("--from=") ? parts.shift() : undefined;
  const dest = parts.pop();
  for (const source of parts) {
    const src = from ? path.join(fromBuild, source.replace(/^\/app\/?/, "")) : path.join(root, source);
    if (!fs.existsSync(src)) fail(`COPY source missing: ${source}`);
    const target = dest.endsWith("/") ? path.join(into, dest, path.basename(source)) : path.join(into, dest);
    fs.cpSync(src, target, { recursive: true });
  }
}

function run(command, args, options = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    child.on("exit", (code, signal) => resolve({ code: code ?? signal, stdout, stderr }));
  });
}

// --- build stage
step(`build stage (${buildStage.from}): only what it copies`);
for (const rest of get(buildStage, "COPY")) copy(rest, buildDir);
fs.symlinkSync(path.join(root, "node_modules"), path.join(buildDir, "node_modules"));
for (const rest of get(buildStage, "RUN").filter((r) => !/^npm ci\b/.test(r))) {
  const result = await run("sh", ["-c", rest], { cwd: buildDir });
  if (result.code !== 0) fail(`build stage "RUN ${rest}" exited ${result.code}\n${result.stdout}${result.stderr}`);
}
fs.unlinkSync(path.join(buildDir, "node_modules"));

// --- runtime stage
step(`runtime stage (${runStage.from}): only what it copies`);
const env = { PATH: process.env.PATH, HOME: homeDir };
for (const rest of get(runStage, "ENV")) for (const [, k, v] of rest.matchAll(/(\w+)=(\S+)/g)) env[k] = v;
let ciSeconds = 0;
for (const [instruction, rest] of runStage.steps) {
  if (instruction === "COPY") copy(rest, appDir, buildDir);
  if (instruction !== "RUN") continue;
  for (const part of rest.split("&&").map((p) => p.trim())) {
    if (/^npm cache clean/.test(part)) continue;
    if (/\/data\b/.test(part)) continue; // the data folder is made below, for the unprivileged user
    const t0 = Date.now();
    const result = await run("sh", ["-c", part], { cwd: appDir, env: { ...process.env, NODE_ENV: env.NODE_ENV } });
    if (result.code !== 0) fail(`runtime stage "RUN ${part}" exited ${result.code}\n${result.stdout}${result.stderr}`);
    if (/^npm ci\b/.test(part)) ciSeconds = (Date.now() - t0) / 1000;
  }
}
const modules = path.join(appDir, "node_modules");
for (const devOnly of ["tsx", "esbuild", "typescript", "jest", "firebase-tools"]) {
  if (fs.existsSync(path.join(modules, devOnly))) fail(`${devOnly} is installed in the runtime stage (a dev dependency)`);
}
const sizeMb = Number(execFileSync("du", ["-sm", modules], { encoding: "utf8" }).split(/\s/)[0]);
step(`npm ci --omit=dev took ${ciSeconds.toFixed(1)} s; node_modules ${sizeMb} MB`);

// --- as an unprivileged user
const wanted = get(runStage, "USER")[0] ?? "root";
const isRoot = process.getuid?.() === 0;
let user = wanted;
if (isRoot) {
  try {
    execFileSync("id", [wanted], { stdio: "ignore" });
  } catch {
    user = "nobody";
  }
  execFileSync("chown", ["-R", user, dataDir, homeDir]);
} else {
  console.warn(`!!! not root: the commands run as ${os.userInfo().username}, not as ${wanted}`);
}
const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
Object.assign(env, { DATA_DIR: dataDir, HOST: "127.0.0.1", PORT: String(await freePort()), GRPC_PORT: String(await freePort()) });
// setpriv execs the command itself (runuser stays as its parent and ends on SIGTERM with it), so
// the STOPSIGNAL reaches node as it does in a container.
const uid = isRoot ? execFileSync("id", ["-u", user], { encoding: "utf8" }).trim() : "";
const gid = isRoot ? execFileSync("id", ["-g", user], { encoding: "utf8" }).trim() : "";
const asUser = (argv) =>
  isRoot ? ["setpriv", [`--reuid=${uid}`, `--regid=${gid}`, "--clear-groups", "--", ...argv]] : [argv[0], argv.slice(1)];
const runAsUser = (argv) => run(...asUser(argv), { cwd: appDir, env });

step(`npm run migrate as ${user} (the embedded data folder)`);
let result = await runAsUser(["npm", "run", "migrate"]);
if (result.code !== 0 || !/applied: /.test(result.stdout)) fail(`npm run migrate exited ${result.code}\n${result.stdout}${result.stderr}`);

const cmd = jsonCommand(get(runStage, "CMD")[0], "CMD");
step(`CMD ${JSON.stringify(cmd)} as ${user}`);
const server = spawn(...asUser(cmd), { cwd: appDir, env, stdio: ["ignore", "pipe", "pipe"] });
let serverOutput = "";
server.stdout.on("data", (c) => (serverOutput += c));
server.stderr.on("data", (c) => (serverOutput += c));
const serverExit = new Promise((resolve) => server.on("exit", (code, signal) => resolve(code ?? signal)));
try {
  const deadline = Date.now() + 120_000;
  while (!serverOutput.includes("voice model service listening")) {
    if (server.exitCode !== null) fail(`the server exited ${server.exitCode}\n${serverOutput}`);
    if (Date.now() > deadline) fail(`the server did not listen within 120 s\n${serverOutput}`);
    await new Promise((r) => setTimeout(r, 200));
  }

  const healthcheck = get(runStage, "HEALTHCHECK")[0];
  if (!healthcheck) fail("the runtime stage has no HEALTHCHECK");
  const check = jsonCommand(healthcheck.slice(healthcheck.indexOf("CMD")), "HEALTHCHECK");
  step(`HEALTHCHECK ${JSON.stringify(check)}`);
  result = await runAsUser(check);
  if (result.code !== 0) fail(`the HEALTHCHECK command exited ${result.code} while the server runs\n${result.stderr}`);

  step("npm run -s token -- alice, then WhoAmI with it");
  result = await runAsUser(["npm", "run", "-s", "token", "--", "alice"]);
  if (result.code !== 0) fail(`npm run token exited ${result.code}\n${result.stdout}${result.stderr}`);
  const token = result.stdout.trim();
  const who = await fetch(`http://127.0.0.1:${env.PORT}/voicemodel.v1.VoiceModelService/WhoAmI`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: "{}",
  });
  const body = await who.json();
  if (who.status !== 200 || body.userId !== "alice") fail(`WhoAmI with the minted token: ${who.status} ${JSON.stringify(body)}`);

  step("GET /console/ and its script: served from dist/console with the console's headers");
  for (const file of ["", "app.js", "console.css"]) {
    const reply = await fetch(`http://127.0.0.1:${env.PORT}/console/${file}`);
    const csp = reply.headers.get("content-security-policy") ?? "";
    if (reply.status !== 200 || !csp.includes("script-src 'self'") || reply.headers.get("x-content-type-options") !== "nosniff")
      fail(`GET /console/${file}: ${reply.status}, CSP "${csp}"`);
  }

  step("SIGTERM (the STOPSIGNAL): the server stops, then the HEALTHCHECK fails");
  server.kill("SIGTERM");
  const code = await Promise.race([serverExit, new Promise((r) => setTimeout(() => r("timeout"), 30_000))]);
  if (code !== 0) fail(`the server ended with ${code} after SIGTERM\n${serverOutput}`);
  result = await runAsUser(check);
  if (result.code === 0) fail("the HEALTHCHECK command succeeds with the server stopped");
} finally {
  if (server.exitCode === null) server.kill("SIGKILL");
}
fs.rmSync(work, { recursive: true, force: true });
step("image check passed");
process.exit(0);
