import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { createRegistry, type DescService } from "@bufbuild/protobuf";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";

/** Sends `authorization: Bearer <token>` (nothing when the token is undefined). */
export const bearer =
  (token: string | undefined): Interceptor =>
  (next) =>
  (req) => {
    if (token !== undefined) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };

/** A Connect client speaking Connect JSON over HTTP/1.1, as a browser or the mobile app would. */
export function connectJsonClient<S extends DescService>(service: S, baseUrl: string, token?: string): Client<S> {
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: false,
    // Batch replies hold google.rpc.Status per failed item; its ErrorInfo is an Any.
    jsonOptions: { registry: createRegistry(ErrorInfoSchema) },
    interceptors: [bearer(token)],
  });
  return createClient(service, transport);
}

/** A gRPC-Web client over HTTP/1.1 (what browsers use through the same listener). */
export function grpcWebClient<S extends DescService>(service: S, baseUrl: string, token?: string): Client<S> {
  const transport = createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(token)] });
  return createClient(service, transport);
}

export interface JsonResponse {
  status: number;
  headers: Headers;
  /** The parsed JSON body (undefined when the body is empty or not JSON). */
  body: any;
  text: string;
}

/** Plain fetch, for checking HTTP status codes and the exact JSON on the wire. */
export async function fetchJson(
  url: string,
  init: { method?: string; body?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<JsonResponse> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.body !== undefined) headers["content-type"] ??= "application/json";
  if (init.token !== undefined) headers.authorization = `Bearer ${init.token}`;
  const response = await fetch(url, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers,
    body: init.body === undefined ? undefined : typeof init.body === "string" ? init.body : JSON.stringify(init.body),
  });
  const text = await response.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: response.status, headers: response.headers, body, text };
}
