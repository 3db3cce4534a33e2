import pino, { type Logger } from "pino";

/** JSON logs on stdout; tokens never reach them. */
export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "voice-model-service" },
    redact: { paths: ["authorization", "*.authorization", "token", "*.token", "secret", "*.secret"], censor: "[redacted]" },
  });
}
