import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { bearer } from "./connect-client";

/**
 * A gRPC client (HTTP/2, the grpc port) with streaming RPCs, from connect-node: the unary
 * grpc-js test client does not do streams.
 */
export function grpcStreamingClient(grpcPort: number, token?: string): Client<typeof VoiceModelService> {
  return createClient(VoiceModelService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${grpcPort}`, interceptors: [bearer(token)] }));
}
