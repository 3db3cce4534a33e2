import type { JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { errorFromJson } from "@connectrpc/connect/protocol-connect";
import { ErrorInfoSchema, type ErrorInfo } from "../../gen/google/rpc/error_details_pb";
import { GrpcCallError } from "./grpc-client";
import type { RpcOutcome } from "./harness";

export interface ExpectedError {
  code: Code;
  reason: string;
  /** ErrorInfo.metadata.field */
  field?: string;
  /** ErrorInfo.metadata.modelId */
  modelId?: string;
  /** The message must contain this (e.g. the model id or the field). */
  message?: string | RegExp;
}

/** Checks an ErrorInfo: reason, domain voicemodel.v1, timestamp, requestId and the subject. */
export function expectErrorInfo(info: ErrorInfo | undefined, expected: ExpectedError, requestId?: string): void {
  expect(info).toBeDefined();
  expect(info!.reason).toBe(expected.reason);
  expect(info!.domain).toBe("voicemodel.v1");
  const timestamp = info!.metadata.timestamp;
  expect(timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  expect(Math.abs(Date.parse(timestamp) - Date.now())).toBeLessThan(60_000);
  expect(info!.metadata.requestId).toBeTruthy();
  if (requestId !== undefined) expect(info!.metadata.requestId).toBe(requestId);
  if (expected.field !== undefined) expect(info!.metadata.field).toBe(expected.field);
  if (expected.modelId !== undefined) expect(info!.metadata.modelId).toBe(expected.modelId);
}

/** Asserts a call outcome is the expected error, with a matching ErrorInfo and x-request-id. */
export function expectRpcError(outcome: RpcOutcome, expected: ExpectedError): void {
  expect({ code: Code[outcome.code] ?? "OK", reason: outcome.errorInfo?.reason }).toEqual({
    code: Code[expected.code],
    reason: expected.reason,
  });
  expect(outcome.requestId).toBeTruthy();
  expectErrorInfo(outcome.errorInfo, expected, outcome.requestId);
  if (expected.message !== undefined) expect(outcome.errorMessage).toMatch(expected.message);
}

/** Awaits a gRPC call that must fail and checks its status and ErrorInfo. */
export async function expectGrpcError(promise: Promise<unknown>, expected: ExpectedError): Promise<GrpcCallError> {
  let error: unknown;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  if (!(error instanceof GrpcCallError)) throw new Error(`expected a gRPC error ${Code[expected.code]}, got ${error === undefined ? "success" : String(error)}`);
  expectRpcError(
    { code: error.code as number as Code, errorInfo: error.errorInfo, errorMessage: error.details, requestId: error.requestId },
    expected,
  );
  return error;
}

/** Awaits a Connect call that must fail and checks its code and ErrorInfo. */
export async function expectConnectError(promise: Promise<unknown>, expected: ExpectedError): Promise<ConnectError> {
  let error: unknown;
  try {
    await promise;
  } catch (e) {
    error = e;
  }
  if (!(error instanceof ConnectError)) throw new Error(`expected a Connect error ${Code[expected.code]}, got ${error === undefined ? "success" : String(error)}`);
  expectRpcError(
    {
      code: error.code,
      errorInfo: error.findDetails(ErrorInfoSchema)[0],
      errorMessage: error.rawMessage,
      requestId: error.metadata.get("x-request-id") ?? undefined,
    },
    expected,
  );
  return error;
}

/** How a Connect call failed (code and ErrorInfo reason); fails the test when it succeeds. */
export async function rpcError(promise: Promise<unknown>): Promise<{ code: Code; reason?: string }> {
  try {
    await promise;
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    return { code: error.code, reason: error.findDetails(ErrorInfoSchema)[0]?.reason };
  }
  throw new Error("expected the call to fail");
}

/**
 * A plain HTTP or Connect JSON error body (Connect's error JSON) as code, message and ErrorInfo;
 * undefined when the body is not that shape.
 */
export function httpError(body: unknown): { code: Code; message: string; errorInfo?: ErrorInfo } | undefined {
  if (typeof body !== "object" || body === null || typeof (body as { code?: unknown }).code !== "string") return undefined;
  const error = errorFromJson(body as JsonValue, undefined, new ConnectError("not an error body", Code.Unknown));
  return { code: error.code, message: error.rawMessage, errorInfo: error.findDetails(ErrorInfoSchema)[0] };
}
