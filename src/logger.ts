import pino, { type DestinationStream, type Logger } from "pino";

/** JSON logs on stdout (or destination); tokens never reach them. */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: "voice-model-service" },
    redact: { paths: ["authorization", "*.authorization", "token", "*.token", "secret", "*.secret"], censor: "[redacted]" },
  };
  return destination ? pino(options, destination) : pino(options);
}
