import { errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import type http from "node:http";
import type { Logger } from "pino";
import { connectError } from "./connect-transport";

/**
 * Answers a plain HTTP request (file routes, a request no route could parse, an unexpected throw)
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
