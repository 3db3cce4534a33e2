import * as grpc from "@grpc/grpc-js";
import { createHmac } from "node:crypto";

/** An HS256 JWT signed with the server's JWT_SECRET. */
export function hs256Token(secret: string, claims: Record<string, unknown>): string {
  const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

const rawBytes = (bytes: Buffer) => bytes;

/** One unary call with a real grpc-js client; rejects on any grpc-status other than 0. */
export function grpcCall(client: grpc.Client, method: string, request: Uint8Array, token?: string, timeoutMs = 5_000): Promise<Buffer> {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest(method, rawBytes, rawBytes, Buffer.from(request), metadata, { deadline: Date.now() + timeoutMs }, (error, reply) =>
      error ? reject(error) : resolve(reply!),
    ),
  );
}
