import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
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
});
