import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { StatusSchema } from "../../gen/google/rpc/status_pb";
import { ReadModelFileRequestSchema } from "../../gen/voicemodel/v1/model_files_pb";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";
import { grpcStreamingClient } from "./streaming-client";

/** How a raw stream ended, as the client saw it. */
export interface StreamEnd {
  ms: number;
  bytes: number;
  grpcStatus?: string;
  /** The ErrorInfo reason of the trailers' google.rpc.Status, when the server sent one. */
  reason?: string;
  rstCode?: number;
}

/** The ErrorInfo reason in a grpc-status-details-bin value. */
function reasonOf(details: unknown): string | undefined {
  if (typeof details !== "string") return undefined;
  const status = fromBinary(StatusSchema, Buffer.from(details, "base64"));
  for (const detail of status.details) {
    const info = anyUnpack(detail, ErrorInfoSchema);
    if (info) return info.reason;
  }
  return undefined;
}

/** Uploads `size` random bytes as the model's file over gRPC. */
export async function uploadRandomFile(grpcPort: number, token: string, modelId: string, size: number): Promise<void> {
  const body = randomBytes(size);
  await grpcStreamingClient(grpcPort, token).uploadModelFile(
    (async function* () {
      yield { part: { case: "header" as const, value: { modelId } } };
      for (let i = 0; i < body.length; i += 1 << 20) yield { part: { case: "chunk" as const, value: body.subarray(i, i + (1 << 20)) } };
    })(),
  );
}

export interface RawReadOptions {
  /** Sent as grpc-timeout (e.g. "700m"); none by default. */
  timeout?: string;
  /** Pause after each piece read, or "never" to never read (the flow-control window stays shut). */
  pauseMs: number | "never";
  /** An existing session to open the stream on (default: a new one, closed with the stream). */
  session?: http2.ClientHttp2Session;
}

/**
 * ReadModelFile over raw HTTP/2: the client keeps no deadline timer of its own and reads at the
 * pace given, so what ends the stream is the server. `ended` resolves when the stream closes.
 */
export function rawGrpcRead(grpcPort: number, token: string, modelId: string, options: RawReadOptions): { ended: Promise<StreamEnd>; stream: http2.ClientHttp2Stream } {
  const session = options.session ?? http2.connect(`http://127.0.0.1:${grpcPort}`);
  const message = toBinary(ReadModelFileRequestSchema, create(ReadModelFileRequestSchema, { modelId }));
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  const started = Date.now();
  const stream = session.request({
    ":method": "POST",
    ":path": `/${VoiceModelService.typeName}/ReadModelFile`,
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${token}`,
    ...(options.timeout ? { "grpc-timeout": options.timeout } : {}),
  });
  stream.end(frame);
  const ended = new Promise<StreamEnd>((resolve) => {
    let bytes = 0;
    let grpcStatus: string | undefined;
    let reason: string | undefined;
    stream.on("response", (headers) => {
      grpcStatus ??= headers["grpc-status"] as string | undefined;
      reason ??= reasonOf(headers["grpc-status-details-bin"]);
    });
    stream.on("trailers", (trailers) => {
      grpcStatus = trailers["grpc-status"] as string | undefined;
      reason = reasonOf(trailers["grpc-status-details-bin"]);
    });
    const pause = options.pauseMs;
    if (pause === "never") stream.pause();
    else
      stream.on("data", (piece: Buffer) => {
        bytes += piece.length;
        if (pause > 0) {
          stream.pause();
          setTimeout(() => stream.resume(), pause);
        }
      });
    stream.on("error", () => undefined);
    stream.once("close", () => {
      resolve({ ms: Date.now() - started, bytes, grpcStatus, reason, rstCode: stream.rstCode });
      if (!options.session) session.destroy();
    });
  });
  session.on("error", () => undefined);
  return { ended, stream };
}
