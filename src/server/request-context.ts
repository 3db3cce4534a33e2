import type { Logger } from "pino";
import type { Caller } from "../auth/caller";
import type { AppError } from "../errors";

/** What a handler knows about the call it serves, whichever transport carried it. */
export interface RequestContext {
  readonly requestId: string;
  /** The verified caller. */
  readonly caller: Caller;
  readonly clientAddress: string;
  /** Aborted when the client cancels or the deadline passes. */
  readonly signal: AbortSignal;
  /** Fully qualified method name, e.g. voicemodel.v1.VoiceModelService/GetVoiceModel. */
  readonly method: string;
  readonly log: Logger;
  /** Set once the call was ended before its handler finished: its deadline passed, or the shutdown ended it. */
  readonly endedBy?: AppError;
}
