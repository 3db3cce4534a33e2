import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { service as healthService } from "grpc-health-check";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { connectJsonClient } from "./helpers/connect-client";
import { createPostgresDatabase } from "./helpers/database";
import { describeOnPostgres, JWT_SECRET } from "./helpers/env";
import { connectGrpc } from "./helpers/grpc-client";
import { rawGrpcRead, uploadRandomFile } from "./helpers/raw-streams";
import { killSpawned, spawnServer, type SpawnedServer } from "./helpers/spawn";
import { userToken } from "./helpers/tokens";

// A server process of its own: SIGTERM has to end it.
describeOnPostgres("shutdown on SIGTERM", () => {
  let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
  let server: SpawnedServer;
  const DRAIN_MS = 1_000;
  const GRACE_MS = 1_500;

  beforeAll(async () => {
    database = await createPostgresDatabase();
    server = await spawnServer(
      {
        DATABASE_URL: database.url,
        JWT_SECRET,
        RATE_LIMITS_ENABLED: "false",
        SHUTDOWN_DRAIN_DELAY_MS: String(DRAIN_MS),
        SHUTDOWN_GRACE_MS: String(GRACE_MS),
        STREAM_STALL_TIMEOUT_MS: "60000",
      },
      60_000,
    );
  }, 90_000);

  afterAll(async () => {
    await killSpawned();
    await database?.drop();
  });

  test("readiness and health go red at once, new calls are served through the drain delay, then refused; a slow stream ends UNAVAILABLE after the grace; exit 0", async () => {
    const token = await userToken("shutdown-user");
    const channel = connectGrpc(VoiceModelService, `127.0.0.1:${server.grpcPort}`);
    const client = channel.as(token);
    const { message } = await client.createVoiceModel({ provider: "xtts-v2", modelPath: "models/shutdown.pth", status: "completed" });
    const modelId = message.model!.id;
    await uploadRandomFile(server.grpcPort, token, modelId, 16 * 1024 * 1024);
    const Health = grpc.makeGenericClientConstructor(healthService, "Health");
    const health = new Health(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
    const healthStatus = () =>
      new Promise<string>((resolve) => health.check({ service: "" }, (error: Error | null, reply: { status: string }) => resolve(error ? "error" : reply.status)));
    expect(await healthStatus()).toBe("SERVING");
    const readyz = async () => (await fetch(`http://127.0.0.1:${server.httpPort}/readyz`)).status;
    expect(await readyz()).toBe(200);

    // A slow reader with no deadline: only the shutdown can end it (16 MB at this pace take far longer than drain and grace).
    const slow = rawGrpcRead(server.grpcPort, token, modelId, { pauseMs: 20 });
    await new Promise((resolve) => slow.stream.once("response", resolve));

    const signalledAt = Date.now();
    server.child.kill("SIGTERM");
    // Red at once (well inside the drain delay).
    let ready = 200;
    while ((ready = await readyz()) === 200 && Date.now() - signalledAt < DRAIN_MS / 2);
    expect(ready).toBe(503);
    expect(await healthStatus()).toBe("NOT_SERVING");
    // Still served during the drain delay, on both transports.
    expect((await client.listVoiceModels({})).message.models).toHaveLength(1);
    const connect = connectJsonClient(VoiceModelService, `http://127.0.0.1:${server.httpPort}`, token);
    expect((await connect.listVoiceModels({})).models).toHaveLength(1);
    expect(Date.now() - signalledAt).toBeLessThan(DRAIN_MS);

    // Then refused with UNAVAILABLE.
    let refusedAt: number | undefined;
    while (refusedAt === undefined && Date.now() - signalledAt < DRAIN_MS + GRACE_MS) {
      const outcome = await connect.listVoiceModels({}).then(
        () => "served",
        (e: unknown) => {
          const error = ConnectError.from(e);
          // A refused call is UNAVAILABLE (SHUTTING_DOWN); a request racing the close of its idle
          // keep-alive connection fails at the socket (the listener is closed by then).
          const socketCode = (error.cause as { code?: string } | undefined)?.code;
          const reason = error.findDetails(ErrorInfoSchema)[0]?.reason;
          if (error.code === Code.Unavailable && reason === "SHUTTING_DOWN") return "refused";
          return ["EPIPE", "ECONNRESET", "ECONNREFUSED"].includes(socketCode ?? "") ? "refused" : `${Code[error.code]} ${reason}: ${error.message}`;
        },
      );
      if (outcome !== "served") {
        expect(outcome).toBe("refused");
        refusedAt = Date.now();
      }
    }
    expect(refusedAt! - signalledAt).toBeGreaterThanOrEqual(DRAIN_MS - 50);
    health.close();
    channel.close();

    // The slow stream ends UNAVAILABLE once the grace is over, and the process exits 0.
    const end = await slow.ended;
    expect(end.grpcStatus).toBe(String(grpc.status.UNAVAILABLE));
    expect(await server.exited).toBe(0);
    const stoppedAfter = Date.now() - signalledAt;
    expect(stoppedAfter).toBeGreaterThanOrEqual(DRAIN_MS + GRACE_MS - 100);
    expect(stoppedAfter).toBeLessThan(DRAIN_MS + GRACE_MS + 4_000);
  }, 60_000);
});
