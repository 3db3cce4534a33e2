import type * as grpc from "@grpc/grpc-js";
import type http2 from "node:http2";

export interface GrpcSessionLimits {
  /** Open connections the listener accepts; more are closed at once. */
  maxConnections: number;
  /** Streams a connection may reset (or have reset) per second before it is closed. */
  maxResetsPerSecond: number;
}

/** How often sessions are looked at for ones node:http2 has given up on. */
const SWEEP_MS = 1_000;
/** A session that answers no PING and reads nothing for this long is closed. */
const PING_GRACE_MS = 2_000;

/**
 * Limits grpc-js does not offer, set on its node:http2 servers (kept private in the pinned
 * 1.14's `http2Servers` map): a connection cap, closing a connection that floods the server with
 * stream resets (streams opened and cancelled at once cost the server work each), and closing
 * connections node:http2 has given up on.
 */
export function limitGrpcSessions(server: grpc.Server, limits: GrpcSessionLimits): void {
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  for (const http2Server of servers?.keys() ?? []) {
    http2Server.maxConnections = limits.maxConnections;
    const dead = closeDeadSessions(http2Server);
    http2Server.on("session", (session: http2.ServerHttp2Session) => {
      dead.watch(session);
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
      // A session a frame could not be sent on is not used again: close it.
      session.on("frameError", () => session.destroy());
    });
  }
}

interface Watched {
  /** Bytes read from the socket at the last sweep. */
  bytesRead: number;
  /** Bytes read changed in the last sweep's interval. */
  wasActive: boolean;
  /** An unanswered PING: when it was sent and the bytes read then. */
  ping?: { at: number; bytesRead: number };
  /** Sweeps in a row that found the PING overdue. */
  strikes: number;
}

/**
 * After a protocol error (a DATA frame on stream 0, a bad SETTINGS frame...) nghttp2 sends GOAWAY
 * and node:http2 stops reading the socket, with no event, and the socket stays open until
 * keepalive or idle timers notice (80 s and more): a client that repeats it piles up open sockets
 * towards the file-handle limit. Such a session reads nothing more, so a session that was read
 * from and then falls quiet is sent one PING; one that neither answers it nor reads anything
 * within PING_GRACE_MS, on two sweeps in a row (a blocked event loop reads late, not never), is
 * destroyed. Sessions that stay busy or stay idle are not pinged.
 */
function closeDeadSessions(http2Server: http2.Http2Server): { watch(session: http2.ServerHttp2Session): void } {
  const sessions = new Map<http2.ServerHttp2Session, Watched>();
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [session, w] of sessions) {
      if (session.destroyed) {
        sessions.delete(session);
        continue;
      }
      const bytesRead = session.socket?.bytesRead ?? 0;
      const active = bytesRead !== w.bytesRead;
      w.bytesRead = bytesRead;
      if (w.ping) {
        if (bytesRead !== w.ping.bytesRead) {
          w.ping = undefined;
          w.strikes = 0;
        } else if (now - w.ping.at >= PING_GRACE_MS && ++w.strikes >= 2) {
          sessions.delete(session);
          session.destroy();
          continue;
        }
      } else if (w.wasActive && !active) {
        const ping = { at: now, bytesRead };
        try {
          session.ping(() => {
            if (w.ping !== ping) return;
            w.ping = undefined;
            // The answer itself is not activity: an idle session is not pinged again and again.
            w.bytesRead = session.socket?.bytesRead ?? w.bytesRead;
          });
          w.ping = ping;
          w.strikes = 0;
        } catch {
          // Too many PINGs outstanding, or the session is going: the next sweep looks again.
        }
      }
      w.wasActive = active;
    }
  }, SWEEP_MS);
  sweep.unref();
  http2Server.once("close", () => clearInterval(sweep));
  return {
    watch(session) {
      sessions.set(session, { bytesRead: session.socket?.bytesRead ?? 0, wasActive: true, strikes: 0 });
      session.once("close", () => sessions.delete(session));
    },
  };
}
