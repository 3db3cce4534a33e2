// The console's one way to the service: connect-web over Connect JSON, same origin.
import { ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb";
import { VoiceModelService } from "../../gen/voicemodel/v1/voice_model_service_pb";

// sessionStorage: gone with the tab, never sent anywhere, never in a URL.
const TOKEN_KEY = "voice-models-console-token";

let token: string | undefined = sessionStorage.getItem(TOKEN_KEY) ?? undefined;

export const getToken = () => token;
export function setToken(value: string | undefined): void {
  token = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => (req) => {
  if (token) req.header.set("authorization", `Bearer ${token}`);
  return next(req);
};

export type Api = Client<typeof VoiceModelService>;
export const api: Api = createClient(
  VoiceModelService,
  createConnectTransport({ baseUrl: location.origin, useBinaryFormat: false, interceptors: [bearer] }),
);

export interface ShownError {
  code: string;
  reason?: string;
  message: string;
  requestId?: string;
}

/** What an error says to a person: its code, reason, message and the request id to quote. */
export function describe(error: unknown): ShownError {
  if (error instanceof ConnectError) {
    const code = codeName(error.code);
    return {
      code,
      reason: error.findDetails(ErrorInfoSchema)[0]?.reason,
      message: error.rawMessage,
      requestId: error.metadata.get("x-request-id") ?? undefined,
    };
  }
  return { code: "CLIENT", message: error instanceof Error ? error.message : String(error) };
}

const CODE_NAMES = [
  "OK", "CANCELED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
];
const codeName = (code: number) => CODE_NAMES[code] ?? String(code);
