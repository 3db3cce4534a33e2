import { errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import type http from "node:http";
import type { Logger } from "pino";
import { errorReply } from "../rpc/error-reply";
import { connectError } from "./connect-transport";

/**
 * Answers a plain HTTP request (the /v1 file routes, a request no route could parse, an unexpected throw)
 * with Connect's unary error JSON: the same status, body and ErrorInfo as a Connect JSON call.
 * Headers already sent: the only honest signal left is to cut the connection.
 */
export function sendHttpError(res: http.ServerResponse, error: unknown, requestId: string, log: Logger): void {
  if (res.headersSent) {
    res.destroy(error instanceof Error ? error : undefined);
    return;
  }
  const rendered = connectError(error, requestId, log);
  const headers: http.OutgoingHttpHeaders = { "content-type": "application/json", "x-request-id": requestId, connection: "close" };
  rendered.metadata.forEach((value, key) => (headers[key] = value));
  res.writeHead(codeToHttpStatus(rendered.code), headers).end(errorToJsonBytes(rendered, {}));
}

/**
 * The REST paths' error reply (/voice-models/...): the flat shape `{error, code, timestamp,
 * requestId}` (code: our error code, the ErrorInfo reason), with the status Connect gives the
 * error's code and `retry-after` when the error has one.
 */
export function sendRestError(res: http.ServerResponse, error: unknown, requestId: string, log: Logger): void {
  if (res.headersSent) {
    res.destroy(error instanceof Error ? error : undefined);
    return;
  }
  const reply = errorReply(error, requestId, log);
  const metadata = reply.info.metadata ?? {};
  const headers: http.OutgoingHttpHeaders = { "content-type": "application/json", "x-request-id": requestId };
  if (reply.retryAfter) headers["retry-after"] = reply.retryAfter;
  const body = { error: reply.error.message, code: reply.error.code, timestamp: metadata.timestamp, requestId };
  res.writeHead(codeToHttpStatus(reply.error.rpcCode), headers).end(JSON.stringify(body));
}
