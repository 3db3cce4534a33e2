// A web app on another origin, in headless chromium: connect-web over Connect JSON and gRPC-Web,
// a checksummed upload and a resumable download over the file routes, and a page of an origin
// CORS_ORIGINS does not list, which the browser must stop.
import { Code } from "@connectrpc/connect";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createModel, startTestServer, type Actor, type TestServer } from "../helpers/harness";
import { describeIf, onPostgres } from "../helpers/env";
import { bundlePage, CHROMIUM_PATH, haveChromium, inCi, launchBrowser, run, startPageServer, type Browser, type PageServer } from "./browser";
import type { Page } from "playwright-core";
import type { Protocol, Target } from "./page/app";

if (!haveChromium && !inCi) {
  process.stderr.write(
    `\n!!! SKIPPING the browser tests: no chromium at ${CHROMIUM_PATH} (apt-get install -y chromium, or set CHROMIUM_PATH). CI runs them. !!!\n\n`,
  );
}

// The browser and CORS do not depend on the database: run once, in the PGlite pass.
const describeBrowser = describeIf(
  !onPostgres && (haveChromium || inCi),
  onPostgres ? "the browser tests run in the PGlite pass" : `no chromium at ${CHROMIUM_PATH}`,
);

describeBrowser("a page on another origin (headless chromium)", () => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "vm-browser-"));
  let allowed: PageServer;
  let unlisted: PageServer;
  let server: TestServer;
  let browser: Browser;
  let page: Page;
  let alice: Actor;
  let target: Target;

  beforeAll(async () => {
    const script = await bundlePage(dataDir);
    allowed = await startPageServer(script);
    unlisted = await startPageServer(script);
    server = await startTestServer({ env: { DATA_DIR: dataDir, CORS_ORIGINS: `https://app.example.com, ${allowed.origin}` } });
    browser = await launchBrowser();
    page = await browser.open(allowed.origin);
    alice = await server.actor();
    target = { baseUrl: server.baseUrl, token: alice.token };
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await Promise.all([allowed?.close(), unlisted?.close()]);
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  test.each<Protocol>(["connect", "grpc-web"])("%s unary calls with a deadline and a request id; errors keep their details", async (protocol) => {
    const requestId = `browser-${protocol}-1`;
    const result = await run(page, "unary", protocol, target, requestId);
    expect(result).toMatchObject({ userId: alice.userId, replyRequestId: requestId });
    expect(result.error).toMatchObject({ kind: "connect", code: Code.NotFound, reason: "VOICE_MODEL_NOT_FOUND" });
    expect(result.error.requestId).toMatch(/^[0-9a-f-]{36}$/);
  });

  describe("model files", () => {
    let modelId: string;
    let sha256: string;
    const size = 700_000;

    beforeAll(async () => {
      modelId = (await createModel(alice)).id;
    });

    test("a checksummed upload: a wrong x-content-sha256 is refused with a readable error, the right one stores the file", async () => {
      const result = await run(page, "upload", target, modelId, size);
      sha256 = result.sha256;
      expect(result.wrong).toMatchObject({ status: 400, reason: "INVALID_ARGUMENT" });
      expect(result.wrong.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(result.right.status).toBe(200);
      expect(result.right.body.file).toMatchObject({ sha256, sizeBytes: String(size) });
      expect(result.right.requestId).toMatch(/^[0-9a-f-]{36}$/);
    });

    test.each<Protocol>(["connect", "grpc-web"])("%s server streaming: ReadModelFile returns the uploaded bytes", async (protocol) => {
      const result = await run(page, "readStream", protocol, target, modelId);
      expect(result).toMatchObject({ size, sha256, declared: sha256 });
    });

    test("a resumable download: Range, then If-Range with the ETag; a stale validator gets the whole file", async () => {
      const result = await run(page, "resumableDownload", target, modelId);
      const etag = `"${sha256}"`;
      const half = Math.floor(size / 2);
      expect(result.head).toMatchObject({ status: 200, etag, "accept-ranges": "bytes", "content-length": String(size) });
      expect(result.first).toMatchObject({
        status: 206,
        length: half,
        etag,
        "accept-ranges": "bytes",
        "content-range": `bytes 0-${half - 1}/${size}`,
        "content-length": String(half),
      });
      expect(result.first["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/);
      expect(result.rest).toMatchObject({ status: 206, length: size - half, "content-range": `bytes ${half}-${size - 1}/${size}` });
      expect(result.stale).toEqual({ status: 200, length: size });
      expect(result.sha256).toBe(sha256);
    });

    test("the export names its file in Content-Disposition; a file route's error reply is readable", async () => {
      const result = await run(page, "exportAndMissing", target, modelId);
      expect(result.exported).toMatchObject({ status: 206, "content-disposition": `attachment; filename="voice-model-${modelId}.vmx"` });
      expect(result.exported["content-range"]).toMatch(/^bytes 0-15\/\d+$/);
      expect(result.missing).toMatchObject({ status: 404, reason: "VOICE_MODEL_NOT_FOUND" });
      expect(result.missing.requestId).toMatch(/^[0-9a-f-]{36}$/);
    });

    test("a REST DELETE passes the preflight; its flat error body is readable", async () => {
      const doomed = (await createModel(alice)).id;
      const result = await run(page, "restDelete", target, doomed);
      expect(result.deleted).toMatchObject({ status: 200, requestId: "browser-rest-1", body: { model: { id: doomed } } });
      expect(result.again).toMatchObject({ status: 404, body: { code: "VOICE_MODEL_NOT_FOUND", requestId: "browser-rest-1" } });
    });

    test("a page of an origin CORS_ORIGINS does not list is stopped by the browser: nothing it sends takes effect", async () => {
      const other = await browser.open(unlisted.origin);
      try {
        const result = await run(other, "refused", target, modelId);
        for (const outcome of Object.values(result)) expect(outcome.ok).toBe(false);
        // connect-web turns the failed fetch into a ConnectError; plain fetch rejects.
        expect(result.connect).toMatchObject({ kind: "connect", code: Code.Unknown });
        expect(result.upload).toMatchObject({ kind: "other", name: "TypeError" });
      } finally {
        await other.close();
      }
      const { message } = await alice.grpc.listVoiceModels({});
      expect(message.models.map((m) => m.modelPath)).not.toContain("refused.pth");
      const head = await server.fetch(`/v1/voice-models/${modelId}/file`, { method: "HEAD", token: alice.token });
      expect(head.headers.get("etag")).toBe(`"${sha256}"`);
    });
  });
});
