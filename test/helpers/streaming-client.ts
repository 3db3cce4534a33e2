import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";

/**
 * A gRPC client (HTTP/2, the grpc port) with streaming RPCs, from connect-node: the unary
 * grpc-js test client does not do streams.
 */
export function grpcStreamingClient(grpcPort: number, token?: string): Client<typeof VoiceModelService> {
  const bearer: Interceptor = (next) => (req) => {
    if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return createClient(VoiceModelService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}`, interceptors: [bearer] }));
}
