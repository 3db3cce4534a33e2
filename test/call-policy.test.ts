// The one table of per-call policy covers exactly what the service serves, and the server applies
// it: with every rate limit at zero, a call is refused RATE_LIMITED exactly when its policy names
// a limit (the reservation comes before validation, so any request shows it).
import { VoiceModelService } from "../gen/voicemodel/v1/voice_model_service_pb";
import { CALL_POLICY, FILE_ROUTE_CALLS, type CallPolicy } from "../src/rpc/call-policy";
import { useTestServer, type MethodName } from "./helpers/harness";

const server = useTestServer({
  env: {
    RATE_LIMITS_ENABLED: "true",
    RATE_LIMIT_CREATE: "0/3600",
    RATE_LIMIT_UPDATE: "0/3600",
    RATE_LIMIT_ANALYTICS: "0/3600",
    RATE_LIMIT_BACKUP: "0/3600",
  },
});

const METHODS = VoiceModelService.methods.map((m) => ({ name: m.name, localName: m.localName as MethodName, kind: m.methodKind }));
const policies = CALL_POLICY as Record<string, CallPolicy>;

test("every served RPC has a policy, and every policy names a served RPC or a route-only file call", () => {
  const served = METHODS.map((m) => m.localName as string);
  expect(served.filter((name) => !(name in policies))).toEqual([]);
  expect(Object.keys(policies).filter((name) => !served.includes(name) && !(FILE_ROUTE_CALLS as readonly string[]).includes(name))).toEqual([]);
});

/** A watch never ends by itself: this one is refused by validation, which comes after the reservation. */
const REQUESTS: Partial<Record<MethodName, object>> = { watchVoiceModelEvents: { afterEventId: 1n << 62n } };

test.each(METHODS)("$name is rate limited exactly when its policy names a limit", async ({ localName, kind }) => {
  const user = await server().actor();
  const outcome = await server().call("grpc", localName, REQUESTS[localName] ?? (kind === "client_streaming" ? [] : {}), user.token);
  expect({ method: localName, rateLimited: outcome.errorInfo?.reason === "RATE_LIMITED" }).toEqual({
    method: localName,
    rateLimited: policies[localName].rateLimit !== undefined,
  });
});
