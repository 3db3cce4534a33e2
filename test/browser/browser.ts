import { build } from "esbuild";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type { Scenarios } from "./page/app";

/** Debian's chromium; CHROMIUM_PATH points elsewhere. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const haveChromium = fs.existsSync(CHROMIUM_PATH);
/** CI must run the browser tests: there a missing chromium is a failure, not a skip. */
export const inCi = process.env.CI === "true";

/** Bundles test/browser/page/app.ts for the browser into a fresh temp folder; returns the script. */
export async function bundlePage(outDir: string): Promise<string> {
  const outfile = path.join(outDir, "app.js");
  await build({
    entryPoints: [path.join(__dirname, "page", "app.ts")],
    bundle: true,
    format: "iife",
    platform: "browser",
    target: "es2022",
    outfile,
    logLevel: "error",
  });
  return fs.readFileSync(outfile, "utf8");
}

export interface PageServer {
  /** http://127.0.0.1:<port>: an origin other than the service's. */
  origin: string;
  close(): Promise<void>;
}

/** A static server for the page: GET / is the HTML, GET /app.js the bundle. */
export async function startPageServer(script: string): Promise<PageServer> {
  const html = '<!doctype html><meta charset="utf-8"><title>voice models</title><script src="/app.js"></script>';
  const server = http.createServer((req, res) => {
    if (req.url === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    else if (req.url === "/app.js") res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(script);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface Browser {
  context: BrowserContext;
  /** Opens the page of `origin` and waits for its scenarios. */
  open(origin: string): Promise<Page>;
  close(): Promise<void>;
}

/** Headless chromium with a fresh profile and nothing talking to the network on its own. */
export async function launchBrowser(): Promise<Browser> {
  if (!haveChromium) throw new Error(`no chromium at ${CHROMIUM_PATH} (CI=true: install it, e.g. apt-get install -y chromium)`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "vm-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 20_000,
  });
  return {
    context,
    async open(origin) {
      const page = await context.newPage();
      page.on("pageerror", (error) => process.stderr.write(`page error on ${origin}: ${error.message}\n`));
      await page.goto(`${origin}/`);
      await page.waitForFunction(() => "scenarios" in globalThis, undefined, { timeout: 10_000 });
      return page;
    },
    async close() {
      try {
        await context.close();
      } finally {
        fs.rmSync(profile, { recursive: true, force: true });
      }
    },
  };
}

/** Runs one of the page's scenarios in the browser and returns what it returned. */
export function run<K extends keyof Scenarios>(page: Page, name: K, ...args: Parameters<Scenarios[K]>): Promise<Awaited<ReturnType<Scenarios[K]>>> {
  return page.evaluate(
    ([n, a]) => (globalThis as unknown as { scenarios: Record<string, (...x: unknown[]) => unknown> }).scenarios[n](...a),
    [name, args] as [string, unknown[]],
  ) as never;
}
