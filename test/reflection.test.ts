import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { useTestServer } from "./helpers/harness";
import { userToken } from "./helpers/tokens";

// An operator's view: `buf curl` knows nothing of our protos and learns them by reflection.
// (Async execFile: a blocking child would stall the in-process server it talks to.)
const run = promisify(execFile);
const BUF = path.join(__dirname, "..", "node_modules", ".bin", "buf");
const server = useTestServer();

const bufCurl = async (...args: string[]) => {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], { timeout: 60_000 });
  return stdout;
};

const MISSING = "00000000-0000-4000-8000-000000000000";

/** Runs a GetVoiceModel of a model that does not exist; returns the error buf curl printed. */
async function failedCall(args: string[], protocol = "grpc"): Promise<{ code: string; details: { type: string; value: string; debug?: unknown }[] }> {
  const token = await userToken("reflection-user");
  const extra = protocol === "grpc" ? ["--http2-prior-knowledge"] : [];
  const failure = await run(BUF, ["curl", "--protocol", protocol, ...extra, "-H", `authorization: Bearer ${token}`, "-d", JSON.stringify({ modelId: MISSING }), ...args], {
    timeout: 60_000,
  }).then(
    () => undefined,
    (error: { code: number; stderr: string }) => error,
  );
  expect(failure?.code).toBeGreaterThan(0);
  return JSON.parse(failure!.stderr);
}

describe.each(["grpc-v1", "grpc-v1alpha"])("server reflection (%s) with buf curl", (protocol) => {
  const target = () => `http://127.0.0.1:${server().grpcPort}`;

  test("lists every method of the service, health and reflection, without a token", async () => {
    const methods = (await bufCurl("--reflect-protocol", protocol, "--list-methods", target())).trim().split("\n");
    for (const method of VoiceModelService.methods) {
      expect(methods).toContain(`${VoiceModelService.typeName}/${method.name}`);
    }
    expect(methods).toContain("grpc.health.v1.Health/Check");
  });

  test("describes messages with their imports, so a call with a Struct round-trips", async () => {
    const token = await userToken("reflection-user");
    const created = JSON.parse(
      await bufCurl(
        "--reflect-protocol",
        protocol,
        "-H",
        `authorization: Bearer ${token}`,
        "-d",
        JSON.stringify({ provider: "xtts-v2", modelPath: "a/b.pth", qualityScore: 0.9, metadata: { accent: "en-GB", takes: 3 } }),
        `${target()}/${VoiceModelService.typeName}/CreateVoiceModel`,
      ),
    );
    expect(created.model).toMatchObject({ userId: "reflection-user", metadata: { accent: "en-GB", takes: 3 }, isActive: true });
  });

  test("an error's detail is named google.rpc.ErrorInfo and carries the reason", async () => {
    const failed = await failedCall(["--reflect-protocol", protocol, `${target()}/${VoiceModelService.typeName}/GetVoiceModel`]);
    // buf decodes details only with the types linked into it (google.rpc.Status, not ErrorInfo),
    // so over gRPC it prints the value in base64; the Connect test below shows it decoded.
    expect(failed).toMatchObject({ code: "not_found", details: [{ type: "google.rpc.ErrorInfo" }] });
    const info = fromBinary(ErrorInfoSchema, Buffer.from(failed.details[0].value, "base64"));
    expect(info).toMatchObject({ reason: "VOICE_MODEL_NOT_FOUND", domain: "voicemodel.v1", metadata: { modelId: MISSING } });
  });
});

test("buf curl over Connect prints an error's google.rpc.ErrorInfo decoded", async () => {
  // Connect JSON errors carry each detail's JSON form ("debug"), which buf prints as sent.
  const failed = await failedCall(["--schema", path.join(__dirname, ".."), `${server().baseUrl}/${VoiceModelService.typeName}/GetVoiceModel`], "connect");
  expect(failed).toMatchObject({
    code: "not_found",
    details: [{ type: "google.rpc.ErrorInfo", debug: { reason: "VOICE_MODEL_NOT_FOUND", domain: "voicemodel.v1", metadata: { modelId: MISSING } } }],
  });
});
