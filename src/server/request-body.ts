import type http from "node:http";

/** 4 MiB per message, as grpc-js's default on the gRPC port (connect's own is 4 GiB). */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/**
 * A unary request body collected with plain 'data' events, or its first bytes past `limit`: the
 * caller refuses those as too large, and the rest of the body is read and dropped.
 */
export function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const pieces: Buffer[] = [];
    let length = 0;
    const done = () => {
      req.off("data", onData).off("end", done);
      if (length > limit) req.resume();
      resolve(pieces.length === 1 ? pieces[0] : Buffer.concat(pieces));
    };
    const onData = (piece: Buffer) => {
      pieces.push(piece);
      length += piece.length;
      if (length > limit) done();
    };
    req.on("data", onData);
    req.once("end", done);
    req.once("error", reject);
  });
}
