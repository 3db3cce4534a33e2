import { Code, ConnectError } from "@connectrpc/connect";
import { AppError, type ErrorCode } from "../errors";

/** The reason of an error the protocol layer (connect, grpc-js) raised before any handler ran. */
const REASON_OF_CODE: Partial<Record<Code, ErrorCode>> = {
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
  [Code.ResourceExhausted]: "REQUEST_TOO_LARGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Unavailable]: "SERVICE_UNAVAILABLE",
};

/**
 * A protocol error (an undecodable body, an unknown field, a message over the size limit) as
 * one of our codes; its message already names what was wrong. Undefined: not one of those.
 */
export function fromProtocolError(error: unknown): AppError | undefined {
  if (!(error instanceof ConnectError)) return undefined;
  // connect reports a request body that does not parse or inflate as INTERNAL (its client and server share
  // the parser); on a server it is the caller's mistake.
  if (error.code === Code.Internal && /^(parse (binary|JSON)|decompression failed)/i.test(error.rawMessage)) {
    return new AppError("INVALID_ARGUMENT", `request body: ${error.rawMessage}`, { field: "body" });
  }
  const reason = REASON_OF_CODE[error.code];
  if (!reason) return undefined;
  // protobuf-es names the field it could not decode: "cannot decode field pkg.Message.model_path ...".
  const field = /cannot decode field [\w.]*\.(\w+) from JSON/.exec(error.rawMessage)?.[1];
  return new AppError(reason, error.rawMessage, field ? { field: field.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase()) } : {});
}
