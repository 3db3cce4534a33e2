import { connectNodeAdapter } from "@connectrpc/connect-node";
import http from "node:http";
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";

/**
 * The baseline of case (e): connect-node as its documentation serves it (`connectNodeAdapter` on
 * node:http), GetActiveVoiceModel answering an empty reply at once. The JSON options and the
 * keep-alive are the service's, so the ratio compares the work per call. Env: PORT.
 */
function main() {
  const handler = connectNodeAdapter({
    jsonOptions: { alwaysEmitImplicit: true, ignoreUnknownFields: false },
    routes: (router) => router.service(VoiceModelService, { getActiveVoiceModel: () => ({}) }),
  });
  const server = http.createServer({ keepAliveTimeout: 65_000 }, handler);
  server.listen(Number(process.env.PORT), "127.0.0.1");
  const stop = () => server.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (require.main === module) main();
