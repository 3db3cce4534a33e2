import type * as grpc from "@grpc/grpc-js";
import type http2 from "node:http2";

export interface GrpcSessionLimits {
  /** Open connections the listener accepts; more are closed at once. */
  maxConnections: number;
  /** Streams a connection may reset (or have reset) per second before it is closed. */
  maxResetsPerSecond: number;
}

/**
 * Limits grpc-js does not offer, set on its node:http2 servers (kept private in the pinned
 * 1.14's `http2Servers` map): a connection cap, and closing a connection that floods the server
 * with stream resets (streams opened and cancelled at once cost the server work each, and the
 * GOAWAY node:http2 answers such a flood with leaves the socket open).
 */
export function limitGrpcSessions(server: grpc.Server, limits: GrpcSessionLimits): void {
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  for (const http2Server of servers?.keys() ?? []) {
    http2Server.maxConnections = limits.maxConnections;
    http2Server.on("session", (session: http2.ServerHttp2Session) => {
      let windowStart = Date.now();
      let resets = 0;
      const counted = () => {
        const now = Date.now();
        if (now - windowStart >= 1_000) {
          windowStart = now;
          resets = 0;
        }
        if (++resets > limits.maxResetsPerSecond && !session.destroyed) session.destroy();
      };
      session.on("stream", (stream: http2.ServerHttp2Stream) => {
        // "aborted": the peer reset the stream before it ended.
        stream.once("aborted", counted);
        if (stream.destroyed) counted();
      });
      // A session node:http2 sent GOAWAY to for a protocol error or flood is not used again: close it.
      session.on("frameError", () => session.destroy());
    });
  }
}
