// The web console at /console, in headless chromium against the real server: served with its
// security headers, signs in with a token, and works the user's models as a person would.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Page } from "playwright-core";
import { createModel, startTestServer, type Actor, type TestServer } from "../helpers/harness";
import { describeIf, onPostgres, REPO_ROOT } from "../helpers/env";
import { CHROMIUM_PATH, haveChromium, inCi, launchBrowser, type Browser } from "./browser";

// eslint-disable-next-line @typescript-eslint/no-require-imports
const consoleBuild = require(path.join(REPO_ROOT, "console", "build.js")) as { ensureFresh(): boolean };

// Page globals inside page.evaluate / waitForFunction callbacks (this program has no DOM library).
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: any, location: any, localStorage: any, sessionStorage: any, window: any;

/** Where the screenshots go (ignored by git; the README names it). */
export const SCREENSHOTS = path.join(REPO_ROOT, "test-output", "console");

// The console does not depend on the database: once, in the PGlite pass.
const describeBrowser = describeIf(
  !onPostgres && (haveChromium || inCi),
  onPostgres ? "the browser tests run in the PGlite pass" : `no chromium at ${CHROMIUM_PATH}`,
);

const XSS_SCRIPT = "<script>window.__xss = 'script'</script>";
const XSS_IMG = "<img src=x onerror=\"window.__xss = 'img'\">";

describeBrowser("the web console (headless chromium)", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-console-"));
  let server: TestServer;
  let browser: Browser;
  let alice: Actor;
  let service: Actor;
  const problems: string[] = [];

  beforeAll(async () => {
    consoleBuild.ensureFresh();
    fs.mkdirSync(SCREENSHOTS, { recursive: true });
    server = await startTestServer({ env: { DATA_DIR: dataDir } });
    browser = await launchBrowser();
    alice = await server.actor();
    service = await server.serviceActor();
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  afterEach(() => {
    // A CSP violation or an uncaught error on any page fails the test that caused it.
    const seen = problems.splice(0);
    expect(seen).toEqual([]);
  });

  async function openConsole(token?: string, viewport = { width: 1280, height: 800 }): Promise<Page> {
    const page = await browser.context.newPage();
    await page.setViewportSize(viewport);
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error" && !/status of (4|5)\d\d/.test(message.text())) problems.push(`console error: ${message.text()}`);
    });
    await page.goto(`${server.baseUrl}/console/`);
    if (token) await signIn(page, token);
    return page;
  }

  async function signIn(page: Page, token: string): Promise<void> {
    await page.fill("#token", token);
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector("#user-id");
  }

  /** Waits for the current view to finish its first load. */
  const ready = (page: Page) => page.waitForSelector("main[data-ready]:not([aria-busy])");

  const shot = (page: Page, name: string) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });

  test("served at /console with a strict CSP and nosniff, same origin", async () => {
    const index = await fetch(`${server.baseUrl}/console/`);
    expect(index.status).toBe(200);
    expect(index.headers.get("content-type")).toMatch(/^text\/html/);
    const csp = index.headers.get("content-security-policy") ?? "";
    for (const directive of ["script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "default-src 'none'"]) expect(csp).toContain(directive);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval/);
    expect(index.headers.get("x-content-type-options")).toBe("nosniff");
    expect(index.headers.get("access-control-allow-origin")).toBeNull();
    const html = await index.text();
    expect(html).not.toMatch(/<script>|<script [^>]*>[^<]/); // no inline script
    const script = await fetch(`${server.baseUrl}/console/app.js`);
    expect(script.headers.get("content-type")).toMatch(/^text\/javascript/);
    expect(script.headers.get("x-content-type-options")).toBe("nosniff");
    const bare = await fetch(`${server.baseUrl}/console`, { redirect: "manual" });
    expect([bare.status, bare.headers.get("location")]).toEqual([308, "/console/"]);
    expect((await fetch(`${server.baseUrl}/console/..%2Fpackage.json`)).status).toBe(404);
  });

  test("signs in with a pasted token kept in sessionStorage only; a bad token shows its reason and request id", async () => {
    const page = await openConsole();
    await page.fill("#token", "not-a-token");
    await page.click("#sign-in button[type=submit]");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.textContent("#error")).toMatch(/UNAUTHENTICATED|INVALID_TOKEN|token/i);
    expect(await page.textContent("#error")).toMatch(/request id [0-9a-f-]{36}/);
    expect(await page.textContent("#sign-in")).toContain("npm run -s token");
    await signIn(page, alice.token);
    expect(await page.textContent("#user-id")).toBe(alice.userId);
    const storage = await page.evaluate(() => ({ local: JSON.stringify(localStorage), session: JSON.stringify(sessionStorage), url: location.href }));
    expect(storage.local).not.toContain(alice.token);
    expect(storage.url).not.toContain(alice.token);
    expect(storage.session).toContain(alice.token);
    // A reload of the tab stays signed in; signing out forgets the token.
    await page.reload();
    await page.waitForSelector("#user-id");
    await page.click("#sign-out");
    await page.waitForSelector("#sign-in");
    expect(await page.evaluate(() => JSON.stringify(sessionStorage))).not.toContain(alice.token);
    await page.close();
  });

  test("My models: filters, paging and sort; activate says first which model stops being active", async () => {
    const user = await server.actor();
    const made = [];
    for (let i = 0; i < 12; i++) {
      made.push(await createModel(service, { userId: user.userId, provider: i % 3 === 0 ? "openai-tts" : "xtts-v2", qualityScore: 0.5 + i / 40, status: "completed" }));
    }
    const page = await openConsole(user.token);
    await ready(page);
    expect(await page.textContent("#page-info")).toContain("12 models");
    expect(await page.locator("#models tbody tr").count()).toBe(10);
    await page.click("#next-page");
    await page.waitForFunction(() => document.querySelectorAll("#models tbody tr").length === 2);
    await page.click("#prev-page");
    await page.waitForFunction(() => document.querySelectorAll("#models tbody tr").length === 10);
    await page.selectOption("#f-provider", "openai-tts");
    await page.click("#filters button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#page-info")?.textContent?.includes("4 models"));
    await page.selectOption("#f-sort", "quality");
    const qualities = await page.locator("#models tbody tr td:nth-child(5)").allTextContents();
    expect(qualities).toEqual([...qualities].sort((a, b) => Number(b) - Number(a)));

    const [first, second] = [made[9], made[6]];
    await page.click(`tr[data-model-id="${first.id}"] [data-action=activate]`);
    expect(await page.textContent("#confirm-text")).toContain("becomes your active model");
    await page.click("#confirm-yes");
    await page.waitForSelector(`tr[data-model-id="${first.id}"] .active-mark`);
    await page.click(`tr[data-model-id="${second.id}"] [data-action=activate]`);
    expect(await page.textContent("#confirm-text")).toContain(`stops being active`);
    await page.click("#confirm-yes");
    await page.waitForSelector(`tr[data-model-id="${second.id}"] .active-mark`);
    expect(await page.locator(".active-mark").count()).toBe(1);
    // Roll back: says which model comes back, then brings it back.
    await page.click("#rollback");
    await page.waitForSelector("#confirm[open]");
    expect(await page.textContent("#confirm-text")).toContain(first.id);
    await page.click("#confirm-yes");
    await page.waitForSelector(`tr[data-model-id="${first.id}"] .active-mark`);
    // Delete of the active model says which one is expected to take over.
    await page.click(`tr[data-model-id="${first.id}"] [data-action=delete]`);
    expect(await page.textContent("#confirm-text")).toMatch(/expected to become active next/);
    await page.click("#confirm-no");
    await shot(page, "models-desktop");
    await page.close();
  });

  test("a shared model whose metadata holds <script> and <img onerror> payloads shows them as text; nothing runs", async () => {
    const bob = await server.actor();
    const model = await createModel(service, { userId: bob.userId, metadata: { name: XSS_SCRIPT, note: XSS_IMG }, status: "completed" });
    await bob.connect.shareVoiceModel({ modelId: model.id, targetUserIds: [alice.userId], permissions: ["view"] });
    const page = await openConsole(alice.token);
    await page.goto(`${server.baseUrl}/console/#/sharing`);
    await page.waitForSelector(`#shared-with-me tr[data-model-id="${model.id}"]`);
    await page.click(`#shared-with-me tr[data-model-id="${model.id}"] a`);
    await page.waitForSelector("#model-metadata");
    await ready(page);
    const metadata = await page.textContent("#model-metadata");
    expect(metadata).toContain(XSS_SCRIPT.replace(/"/g, '\\"'));
    expect(metadata).toContain("onerror");
    const dom = await page.evaluate(() => ({
      xss: window.__xss,
      images: document.querySelectorAll("img").length,
      scripts: [...document.querySelectorAll("script")].map((s: any) => s.getAttribute("src")),
    }));
    expect(dom).toEqual({ xss: undefined, images: 0, scripts: ["app.js"] });
    // Bob's side: his shares list names alice; he revokes, and alice's list empties live.
    const bobPage = await openConsole(bob.token);
    await bobPage.goto(`${server.baseUrl}/console/#/sharing`);
    await bobPage.waitForSelector(`#share-list tr[data-share="${model.id}:${alice.userId}"]`);
    await page.goto(`${server.baseUrl}/console/#/sharing`);
    await page.waitForSelector(`#shared-with-me tr[data-model-id="${model.id}"]`);
    await bobPage.click(`#share-list tr[data-share="${model.id}:${alice.userId}"] [data-action=revoke]`);
    await bobPage.click("#confirm-yes");
    await bobPage.waitForSelector("#share-list:has-text('You have shared nothing')");
    await page.waitForSelector("#shared-with-me:has-text('Nothing is shared with you')");
    // And grants again from the form.
    await bobPage.selectOption("#share-model", model.id);
    await bobPage.fill("#share-target", alice.userId);
    await bobPage.click("#share-form button[type=submit]");
    await bobPage.waitForSelector(`#share-list tr[data-share="${model.id}:${alice.userId}"]`);
    await page.waitForSelector(`#shared-with-me tr[data-model-id="${model.id}"]`);
    await shot(bobPage, "sharing-desktop");
    await bobPage.close();
    await page.close();
  });

  test("a model: details, quality chart, lineage, activation timeline, upload with progress, export download", async () => {
    const user = await server.actor();
    const parent = await createModel(service, { userId: user.userId, status: "completed" });
    const child = await createModel(service, {
      userId: user.userId,
      status: "completed",
      parentModelId: parent.id,
      qualityComponents: { similarity: 0.9, naturalness: 0.8, clarity: 0.7, consistency: 0.6 },
    });
    await user.connect.activateVoiceModel({ modelId: child.id });
    const page = await openConsole(user.token);
    await page.goto(`${server.baseUrl}/console/#/model/${child.id}`);
    await page.waitForSelector("#model-details");
    await ready(page);
    expect(await page.textContent("#model-details")).toContain(child.provider);
    expect(await page.locator(".quality-chart .bar").count()).toBe(4);
    expect(await page.textContent("#lineage")).toContain(parent.modelPath);
    expect(await page.textContent("#timeline")).toContain("became active");
    expect(await page.textContent("#usage")).toMatch(/0 calls/);
    await page.setInputFiles("#upload-file", { name: "voice.pth", mimeType: "application/octet-stream", buffer: Buffer.alloc(300_000, 7) });
    await page.click("#upload-start");
    await page.waitForFunction(() => document.querySelector("#upload-status")?.textContent?.startsWith("Uploaded"));
    expect(await page.getAttribute("#upload-progress", "value")).toBe("100");
    const sha256 = createHash("sha256").update(Buffer.alloc(300_000, 7)).digest("hex");
    await page.waitForFunction((sha) => document.querySelector('[data-field="File SHA-256"]')?.textContent === sha, sha256);
    expect(await page.textContent('[data-field="File size"]')).toBe("293.0 KiB");
    expect(await page.locator("#usage .chart canvas").count()).toBe(3);
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    expect(fs.statSync(await download.path()).size).toBeGreaterThan(0);
    await shot(page, "model-desktop");
    await page.close();
  });

  test("compare: side by side, the recommendation highlighted with its reason; select best by criteria", async () => {
    const user = await server.actor();
    const ids = [];
    for (const q of [0.6, 0.9, 0.7]) ids.push((await createModel(service, { userId: user.userId, status: "completed", qualityScore: q })).id);
    const page = await openConsole(user.token);
    await page.goto(`${server.baseUrl}/console/#/compare?ids=${ids.join(",")}`);
    await page.waitForSelector("#recommendation");
    expect(await page.textContent("#recommendation")).toMatch(/Recommended: .+ — .+/);
    expect(await page.locator("#comparison td.best").count()).toBeGreaterThan(0);
    expect(await page.textContent("#comparison thead")).toContain("recommended");
    await page.fill("#sb-min-quality", "0.65");
    await page.click("#select-best button[type=submit]");
    await page.waitForSelector("#select-best-result p");
    expect(await page.textContent("#select-best-result")).toContain("#");
    await shot(page, "compare-desktop");
    await page.close();
  });

  test("live: changes made by another client show without a reload", async () => {
    const user = await server.actor();
    await createModel(service, { userId: user.userId, status: "completed" }); // the first completed model is active
    const a = await createModel(service, { userId: user.userId, status: "completed" });
    const page = await openConsole(user.token);
    await ready(page);
    await page.waitForSelector("#live:text('live updates on')");
    await page.waitForSelector(`tr[data-model-id="${a.id}"]`);
    await user.connect.activateVoiceModel({ modelId: a.id });
    await page.waitForSelector(`tr[data-model-id="${a.id}"] .active-mark`);
    const b = await createModel(service, { userId: user.userId, status: "completed" });
    await page.waitForSelector(`tr[data-model-id="${b.id}"]`);
    await page.close();
  });
});
