import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { REPO_ROOT, TEST_DB } from "./helpers/env";
import { useTestServer } from "./helpers/harness";
import { userToken } from "./helpers/tokens";

// Clients in other languages, built the way their ecosystems do it from proto/ as it is
// (clients/run.sh: protoc and Debian's grpc packages, no package index). What they see on the wire
// does not depend on the database, so they run in the PGlite pass only.
// Without the toolchain the tests are skipped with a warning; CI sets REQUIRE_CLIENT_TOOLCHAINS=1.
const run = promisify(execFile);
const required = process.env.REQUIRE_CLIENT_TOOLCHAINS === "1";

const onPath = (tool: string) => (process.env.PATH ?? "").split(path.delimiter).some((dir) => fs.existsSync(path.join(dir, tool)));
const TOOLCHAINS = {
  python: {
    packages: "protobuf-compiler protobuf-compiler-grpc libprotobuf-dev python3-grpcio python3-protobuf",
    missing: () => [
      ...["protoc", "grpc_python_plugin"].filter((t) => !onPath(t)),
      ...["/usr/bin/python3", "/usr/lib/python3/dist-packages/grpc", "/usr/include/google/protobuf/struct.proto"].filter((p) => !fs.existsSync(p)),
    ],
  },
  go: {
    packages:
      "protobuf-compiler libprotobuf-dev golang protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev golang-google-genproto-dev golang-github-golang-protobuf-1-5-dev",
    missing: () => [
      ...["protoc", "go", "protoc-gen-go", "protoc-gen-go-grpc"].filter((t) => !onPath(t)),
      ...["google.golang.org/grpc", "google.golang.org/genproto/googleapis/rpc/errdetails", "github.com/golang/protobuf/proto"]
        .map((p) => path.join("/usr/share/gocode/src", p))
        .filter((p) => !fs.existsSync(p)),
    ],
  },
} as const;

interface ClientReport {
  client: string;
  model: { id: string; userId: string; metadata: Record<string, unknown> };
  upload: { sizeBytes: number | string; sha256: string };
  read: { bytes: number; messages: number; sha256: string; reportedSha256: string; matches: boolean };
  sentSha256: string;
  error: { code: string; reason: string; domain: string; metadata: Record<string, string> };
}

const server = TEST_DB === "pglite" ? useTestServer() : () => undefined as never;

describe.each(["python", "go"] as const)("%s client generated from proto/", (lang) => {
  const missing = TEST_DB === "pglite" ? TOOLCHAINS[lang].missing() : [];
  const runs = TEST_DB === "pglite" && (missing.length === 0 || required);
  if (TEST_DB === "pglite" && missing.length > 0 && !required) {
    const bar = "!".repeat(100);
    console.warn(
      `${bar}\n! The ${lang} client test is SKIPPED: missing ${missing.join(", ")}\n` +
        `! apt-get install -y ${TOOLCHAINS[lang].packages}\n! (CI sets REQUIRE_CLIENT_TOOLCHAINS=1 and fails instead)\n${bar}`,
    );
  }
  const maybe = runs ? test : test.skip;
  const why = TEST_DB !== "pglite" ? " [runs in the PGlite pass]" : missing.length > 0 && !required ? ` [skipped: missing ${missing.join(", ")}]` : "";

  maybe(
    `creates a model, uploads and reads back its file, decodes an ErrorInfo${why}`,
    async () => {
      expect({ missing, install: `apt-get install -y ${TOOLCHAINS[lang].packages}` }).toMatchObject({ missing: [] });
      const userId = `${lang}-client`;
      const { stdout } = await run(path.join(REPO_ROOT, "clients", "run.sh"), [lang], {
        env: { ...process.env, VOICEMODEL_ADDR: `127.0.0.1:${server().grpcPort}`, VOICEMODEL_TOKEN: await userToken(userId) },
        timeout: 240_000,
        maxBuffer: 16 * 1024 * 1024,
      }).catch((error: { stderr?: string; message: string }) => {
        throw new Error(`clients/run.sh ${lang} failed: ${error.stderr || error.message}`);
      });
      const report: ClientReport = JSON.parse(stdout.trim().split("\n").pop()!);
      const size = 256 * 1024 * 10 + 123;
      expect(report).toMatchObject({
        client: lang,
        model: { userId, metadata: { client: lang } },
        upload: { sha256: report.sentSha256 },
        read: { bytes: size, sha256: report.sentSha256, reportedSha256: report.sentSha256, matches: true },
        error: { reason: "VOICE_MODEL_NOT_FOUND", domain: "voicemodel.v1" },
      });
      expect(Number(report.upload.sizeBytes)).toBe(size);
      expect(report.read.messages).toBeGreaterThan(1);
      expect(report.error.code.replace(/_/g, "").toLowerCase()).toBe("notfound");
      expect(report.error.metadata.modelId).toMatch(/^[0-9a-f-]{36}$/);

      // The model is really there, as the service's own client sees it.
      const { message } = await server().grpc(await userToken(userId)).getVoiceModel({ modelId: report.model.id });
      expect(message.model).toMatchObject({ id: report.model.id, userId });
    },
    300_000,
  );
});
