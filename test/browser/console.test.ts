// The web console at /console, in headless chromium against the real server: served with its
// security headers, signs in with a token, and works the user's models as a person would.
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Page } from "playwright-core";
import { CALL_POLICY } from "../../src/rpc/call-policy";
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

if (!haveChromium && !inCi) {
  process.stderr.write(`\n!!! SKIPPING the console browser tests: no chromium at ${CHROMIUM_PATH} (apt-get install -y chromium, or set CHROMIUM_PATH). CI runs them. !!!\n\n`);
}

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
    // The document's default rate limits, on: the console must live within them.
    server = await startTestServer({ env: { DATA_DIR: dataDir, RATE_LIMITS_ENABLED: "true" } });
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

  /** Every URL the page requests from the network (blob: downloads are not requests). */
  function recordRequests(page: Page): string[] {
    const urls: string[] = [];
    page.on("request", (request) => {
      if (/^https?:/.test(request.url())) urls.push(request.url());
    });
    return urls;
  }

  /** The console talks to the service only through the RPCs; besides them it loads its own files. */
  function expectOnlyRpcRequests(urls: string[]): void {
    expect(urls.length).toBeGreaterThan(0);
    const outside = urls.filter((u) => {
      const url = new URL(u);
      return url.origin !== server.baseUrl || !(url.pathname.startsWith("/voicemodel.v1.VoiceModelService/") || url.pathname.startsWith("/console/"));
    });
    expect(outside).toEqual([]);
    expect(urls.some((u) => new URL(u).pathname.startsWith("/voicemodel.v1.VoiceModelService/"))).toBe(true);
  }

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
    // Data goes in as text only: nothing in the bundle (libraries included) parses HTML.
    expect(await script.text()).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
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
    // Waits until the table shows exactly these rows, in this order.
    const shows = (ids: string[]) =>
      page.waitForFunction(
        (want) => JSON.stringify([...document.querySelectorAll("#models tbody tr")].map((r: any) => r.getAttribute("data-model-id"))) === want,
        JSON.stringify(ids),
      );
    // The service sorts (orderBy), so the order runs across pages: the ten worst, then the two best.
    await page.selectOption("#f-sort", "quality-low");
    await shows(made.slice(0, 10).map((m) => m.id));
    await page.click("#next-page");
    await shows([made[10].id, made[11].id]);
    await page.selectOption("#f-provider", "openai-tts");
    await page.selectOption("#f-sort", "quality");
    await page.click("#filters button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#page-info")?.textContent?.includes("4 models"));
    await shows([made[9].id, made[6].id, made[3].id, made[0].id]);

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
    const requests = recordRequests(page);
    await ready(page);
    // Create one from the form: it shows in the list (by the reload and the change stream).
    await page.click("#create summary");
    await page.selectOption("#new-provider", "openai-tts");
    await page.fill("#new-path", "voices/made-in-console.pth");
    await page.click("#create-form button[type=submit]");
    await page.waitForSelector("#models a.model-link:has-text('voices/made-in-console.pth')");
    await page.goto(`${server.baseUrl}/console/#/model/${child.id}`);
    await page.waitForSelector("#model-details");
    await ready(page);
    expect(await page.textContent("#model-details")).toContain(child.provider);
    expect(await page.locator(".quality-chart .bar").count()).toBe(4);
    expect(await page.textContent("#lineage")).toContain(parent.modelPath);
    expect(await page.textContent("#timeline")).toContain("became active");
    expect(await page.textContent("#usage")).toMatch(/0 calls/);
    // No file yet: the export is refused, and the page shows the reason and the request id.
    await page.click("#export");
    await page.waitForSelector("#error:not([hidden])");
    expect(await page.getAttribute("#error", "data-reason")).toMatch(/^[A-Z_]+$/);
    expect(await page.textContent("#error")).toMatch(/request id [0-9a-f-]{36}/);
    await page.click("#error button");
    // Three 1 MiB appends; the second one's reply is lost once (the server got it): the console
    // sends it again, which the server answers as received, and the upload completes.
    const body = Buffer.alloc(2.5 * 1024 * 1024, 7);
    body.write("voice model bytes", 1_500_000);
    const appends: number[] = [];
    await page.route("**/voicemodel.v1.VoiceModelService/AppendModelFileUpload", async (route) => {
      const offset = Number(JSON.parse(route.request().postData() ?? "{}").offset ?? 0);
      appends.push(offset);
      const reply = await route.fetch();
      if (appends.filter((o) => o === offset).length === 1 && offset === 1024 * 1024) {
        await route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ code: "unavailable", message: "injected: reply lost" }) });
      } else await route.fulfill({ response: reply });
    });
    const progress: string[] = [];
    await page.exposeFunction("__progress", (value: string) => progress.push(value));
    await page.evaluate(() => {
      const bar = document.querySelector("#upload-progress");
      new window.MutationObserver(() => window.__progress(bar.value)).observe(bar, { attributes: true });
    });
    await page.setInputFiles("#upload-file", { name: "voice.pth", mimeType: "application/octet-stream", buffer: body });
    await page.click("#upload-start");
    await page.waitForFunction(() => /^Uploaded|refused/.test(document.querySelector("#upload-status")?.textContent ?? ""));
    expect(await page.textContent("#upload-status")).toMatch(/^Uploaded/);
    expect(await page.getAttribute("#upload-progress", "value")).toBe("100");
    expect(appends).toEqual([0, 1024 * 1024, 1024 * 1024, 2 * 1024 * 1024]);
    await page.unroute("**/voicemodel.v1.VoiceModelService/AppendModelFileUpload");
    // The bar moved per acknowledged chunk (40% after the first MiB), not only at the end.
    expect(progress.map(Number).filter((v) => v > 0 && v < 100).length).toBeGreaterThan(0);
    const sha256 = createHash("sha256").update(body).digest("hex");
    await page.waitForFunction((sha) => document.querySelector('[data-field="File SHA-256"]')?.textContent === sha, sha256);
    expect(await page.textContent('[data-field="File size"]')).toBe("2.5 MiB");
    expect(await page.locator("#usage .chart canvas").count()).toBe(3);
    // The export: ExportVoiceModel's stream assembled as the export file, checksum at its end.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    const exported = fs.readFileSync(await download.path());
    expect(exported.subarray(0, 4).toString()).toBe("VMX1");
    expect(exported.subarray(exported.length - 32).toString("hex")).toBe(sha256);
    expect(exported.subarray(exported.length - 32 - body.length, exported.length - 32).equals(body)).toBe(true);
    expect(download.suggestedFilename()).toBe(`voice-model-${child.id}.vmx`);
    expect(await page.getAttribute("#export-progress", "value")).toBe("100");
    await shot(page, "model-desktop");
    expectOnlyRpcRequests(requests);
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

  test("backups: create with live progress, list, restore with its options, download", async () => {
    const user = await server.actor();
    const model = await createModel(service, { userId: user.userId, status: "completed" });
    const page = await openConsole(user.token);
    const requests = recordRequests(page);
    await page.goto(`${server.baseUrl}/console/#/backups`);
    await ready(page);
    await page.click("#backup-create");
    await page.waitForFunction(() => document.querySelector("#backup-status")?.textContent?.startsWith("Backup done"));
    await page.waitForSelector("#backup-list tr[data-backup-id]");
    // Delete the model elsewhere, then restore it from the backup, activating what was active.
    await user.connect.deleteVoiceModel({ modelId: model.id });
    await page.check("#backup-list tr[data-backup-id] [data-option=overwrite]");
    await page.check("#backup-list tr[data-backup-id] [data-option=activate]");
    await page.click("#backup-list tr[data-backup-id] [data-action=restore]");
    expect(await page.textContent("#confirm-text")).toContain("active model becomes active");
    expect(await page.textContent("#confirm-text")).toContain("overwritten");
    await page.click("#confirm-yes");
    await page.waitForSelector("#restore-result:has-text('restored'), #error:not([hidden])");
    expect(await page.locator("#error:not([hidden])").count() ? await page.textContent("#error") : "").toBe("");
    expect((await user.connect.getVoiceModel({ modelId: model.id })).model?.deletedAt).toBeUndefined();
    // ReadBackup's stream, checked against the backup's SHA-256 and saved.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#backup-list tr[data-backup-id] [data-action=download]")]);
    const saved = fs.readFileSync(await download.path());
    const [listed] = (await user.connect.listBackups({})).backups;
    expect(saved.subarray(0, 4).toString()).toBe("VMB1");
    expect(createHash("sha256").update(saved).digest("hex")).toBe(listed.sha256);
    expect(download.suggestedFilename()).toBe(`voice-models-backup-${listed.backupId}.vmb`);
    await shot(page, "backups-desktop");
    expectOnlyRpcRequests(requests);
    await page.close();
  });

  test("admin pages: a user is refused; an admin sees alerts, fleet figures, a cleanup dry run and the audit log", async () => {
    const page = await openConsole(alice.token);
    expect(await page.locator("#nav a[data-route=admin]").count()).toBe(0);
    await page.goto(`${server.baseUrl}/console/#/admin/audit`);
    await page.waitForSelector("#refused");
    expect(await page.locator("#audit-list").count()).toBe(0);
    await page.close();

    await createModel(service, { userId: alice.userId }); // an audited change of alice's
    const admin = await server.adminActor();
    const adminPage = await openConsole(admin.token);
    await adminPage.goto(`${server.baseUrl}/console/#/admin/alerts`);
    await adminPage.waitForSelector("#admin-alerts table");
    await adminPage.goto(`${server.baseUrl}/console/#/admin/fleet`);
    await adminPage.waitForSelector("#fleet-figures");
    expect(await adminPage.textContent("#fleet-figures")).toContain("Live models");
    await adminPage.goto(`${server.baseUrl}/console/#/admin/cleanup`);
    await adminPage.click("#cleanup-dry-run");
    await adminPage.waitForSelector("#cleanup-result p");
    expect(await adminPage.textContent("#cleanup-result")).toContain("Dry run");
    expect(await adminPage.isEnabled("#cleanup-run")).toBe(true);
    await adminPage.goto(`${server.baseUrl}/console/#/admin/audit`);
    await adminPage.waitForSelector("#audit-list table");
    await adminPage.fill("#audit-user", alice.userId);
    await adminPage.click("#audit-filters button[type=submit]");
    await adminPage.waitForFunction(
      (id) => {
        const rows = [...document.querySelectorAll("#audit-list tbody tr")];
        return rows.length > 0 && rows.every((tr: any) => tr.textContent.includes(id));
      },
      alice.userId,
    );
    await shot(adminPage, "admin-audit-desktop");
    await adminPage.close();
  });

  describe("every page: axe-core finds no serious violation; at 375x667 nothing scrolls sideways", () => {
    const axeSource = fs.readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
    let model: { id: string };
    let other: { id: string };
    let admin: Actor;
    beforeAll(async () => {
      model = await createModel(service, { userId: alice.userId, status: "completed", metadata: { note: "x".repeat(300) } });
      other = await createModel(service, { userId: alice.userId, status: "completed" });
      admin = await server.adminActor();
    });
    const pages: Array<[string, () => string, "user" | "admin"]> = [
      ["sign-in", () => "", "user"],
      ["models", () => "#/models", "user"],
      ["model", () => `#/model/${model.id}`, "user"],
      ["compare", () => `#/compare?ids=${model.id},${other.id}`, "user"],
      ["backups", () => "#/backups", "user"],
      ["sharing", () => "#/sharing", "user"],
      ["admin-alerts", () => "#/admin/alerts", "admin"],
      ["admin-fleet", () => "#/admin/fleet", "admin"],
      ["admin-cleanup", () => "#/admin/cleanup", "admin"],
      ["admin-audit", () => "#/admin/audit", "admin"],
    ];
    test.each(pages)("%s", async (name, hash, who) => {
      for (const viewport of [{ width: 1280, height: 800 }, { width: 375, height: 667 }]) {
        const page = await openConsole(name === "sign-in" ? undefined : (who === "admin" ? admin : alice).token, viewport);
        if (hash()) {
          await page.goto(`${server.baseUrl}/console/${hash()}`);
          await page.waitForFunction(() => document.querySelector("main")?.getAttribute("data-ready") && !document.querySelector("main")?.hasAttribute("aria-busy"));
        }
        // axe runs through the DevTools protocol: the page's CSP stays on.
        await page.evaluate(axeSource);
        const violations = await page.evaluate(async () => {
          const result = await window.axe.run(document, { resultTypes: ["violations"] });
          return result.violations
            .filter((v: any) => v.impact === "serious" || v.impact === "critical")
            .map((v: any) => `${v.id}: ${v.nodes.map((n: any) => n.target.join(" ")).join(", ")}`);
        });
        expect(violations).toEqual([]);
        const widths = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, view: window.innerWidth }));
        expect(widths.scroll).toBeLessThanOrEqual(widths.view);
        await shot(page, `${name}-${viewport.width < 600 ? "phone" : "desktop"}`);
        await page.close();
      }
    });
  });

  test("by keyboard alone: sign in, reach a model's Activate, confirm, and it is active", async () => {
    const user = await server.actor();
    await createModel(service, { userId: user.userId, status: "completed" });
    const target = await createModel(service, { userId: user.userId, status: "completed" });
    const page = await openConsole();
    await page.waitForSelector("#token:focus");
    await page.keyboard.type(user.token);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#user-id");
    await ready(page);
    let reached = false;
    for (let i = 0; i < 80 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate((id) => document.activeElement?.matches(`tr[data-model-id="${id}"] [data-action=activate]`) ?? false, target.id);
    }
    expect(reached).toBe(true);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#confirm[open]");
    expect(await page.evaluate(() => document.activeElement?.id)).toBe("confirm-yes");
    await page.keyboard.press("Enter");
    await page.waitForSelector(`tr[data-model-id="${target.id}"] .active-mark`);
    await page.close();
  });

  test("a page load spends at most one rate-limited slot per panel", async () => {
    // The panels that show rate-limited data: a model's usage plots and the comparison. Every
    // other page reads only calls without a limit. Slots are counted where the limiter keeps them.
    const user = await server.actor();
    const admin = await server.adminActor();
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await createModel(service, { userId: user.userId, status: "completed" })).id);
    const limited = new Set(
      Object.entries(CALL_POLICY)
        .filter(([, policy]) => "rateLimit" in policy)
        .map(([name]) => name[0].toUpperCase() + name.slice(1)),
    );
    const slotsOf = async (userId: string) =>
      Number(((await server.db.knex("rate_limit_hits").where({ user_id: userId }).count({ n: "*" })) as Array<{ n: string | number }>)[0].n);
    const pages: Array<[Actor, string, string[]]> = [
      [user, "#/models", []],
      [user, `#/model/${ids[0]}`, ["GetVoiceModelUsageSeries"]],
      [user, `#/compare?ids=${ids.join(",")}`, ["CompareVoiceModels"]],
      [user, "#/backups", []],
      [user, "#/sharing", []],
      [admin, "#/admin/alerts", []],
      [admin, "#/admin/fleet", []],
      [admin, "#/admin/cleanup", []],
      [admin, "#/admin/audit", []],
    ];
    for (const [actor, hash, panels] of pages) {
      const page = await openConsole(actor.token);
      await ready(page);
      // Go there in the app, then count one load of that page alone (a reload keeps the token).
      const shown = await page.evaluate(() => document.querySelector("main").dataset.ready);
      await page.evaluate((h) => (location.hash = h), hash);
      await page.waitForFunction((prev) => document.querySelector("main").dataset.ready !== prev && !document.querySelector("main").hasAttribute("aria-busy"), shown);
      const before = await slotsOf(actor.userId);
      const called: string[] = [];
      page.on("request", (request) => {
        const method = /\/voicemodel\.v1\.VoiceModelService\/(\w+)$/.exec(new URL(request.url()).pathname)?.[1];
        if (method && limited.has(method)) called.push(method);
      });
      await page.reload();
      await ready(page);
      expect({ hash, called: called.sort() }).toEqual({ hash, called: panels });
      expect({ hash, spent: (await slotsOf(actor.userId)) - before }).toEqual({ hash, spent: panels.length });
      await page.close();
    }
  });

  test("an hour of normal use within the configured limits meets no RATE_LIMITED", async () => {
    // An hour: 20 model pages, 6 comparisons, 3 rollbacks, 2 new models, one backup, and the
    // list, sharing and history reads in between (those take no slot). Defaults: analytics
    // 60/h, update 20/h, create 5/h, backup 2/day.
    const user = await server.actor();
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await createModel(service, { userId: user.userId, status: "completed" })).id);
    const page = await openConsole(user.token);
    const limited: string[] = [];
    page.on("response", async (response) => {
      if (response.status() === 429 || (response.status() >= 400 && /RATE_LIMITED/.test(await response.text().catch(() => "")))) limited.push(response.url());
    });
    const visit = async (hash: string) => {
      await page.goto(`${server.baseUrl}/console/${hash}`);
      await page.waitForFunction(() => document.querySelector("main")?.getAttribute("data-ready") && !document.querySelector("main")?.hasAttribute("aria-busy"));
      const error = await page.locator("#error:not([hidden])").count();
      if (error) limited.push(`${hash}: ${await page.textContent("#error")}`);
    };
    for (let i = 0; i < 20; i++) {
      await visit(`#/model/${ids[i % ids.length]}`);
      if (i % 3 === 0) await visit(`#/models?r=${i}`);
      if (i % 5 === 0) await visit(`#/sharing?r=${i}`);
    }
    for (let i = 0; i < 6; i++) await visit(`#/compare?ids=${ids.slice(0, 2 + (i % 3)).join(",")}`);
    for (const id of ids.slice(1, 4)) {
      await user.connect.activateVoiceModel({ modelId: id });
      await visit(`#/models?a=${id}`);
      await page.click("#rollback");
      await page.click("#confirm-yes");
      await page.waitForFunction(() => /Rolled back/.test(document.querySelector("#notice")?.textContent ?? ""));
    }
    await visit("#/models");
    for (const name of ["hour-1.pth", "hour-2.pth"]) {
      if ((await page.locator("#create[open]").count()) === 0) await page.click("#create summary");
      await page.fill("#new-path", name);
      await page.click("#create-form button[type=submit]");
      await page.waitForSelector(`#models a.model-link:has-text('${name}'), #error:not([hidden])`);
      expect(await page.locator("#error:not([hidden])").count() ? await page.textContent("#error") : "").toBe("");
    }
    await visit("#/backups");
    await page.click("#backup-create");
    await page.waitForFunction(() => document.querySelector("#backup-status")?.textContent?.startsWith("Backup done"));
    expect(limited).toEqual([]);
    await page.close();
  });
});
