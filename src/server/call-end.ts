import { AppError } from "../errors";
import { deadlineExceeded } from "../db/call-deadline";

export const shuttingDown = (message = "the service is shutting down; retry (another instance will answer)") =>
  new AppError("SHUTTING_DOWN", message, { retryAfterSeconds: 1 });

/**
 * The calls in flight on this instance, so a shutdown can refuse new ones and end the rest.
 * Readiness turns red when draining starts; new calls are refused once `refusing` is set.
 */
export class CallRegistry {
  draining = false;
  refusing = false;
  /** Calls ended so far, however they ended. */
  ended = 0;
  private readonly live = new Set<CallEnd>();

  /** A new call's end: at its deadline, or when the shutdown ends every call. */
  begin(deadlineMs: number | undefined): CallEnd {
    const end = new CallEnd(deadlineMs, () => {
      if (this.live.delete(end)) this.ended++;
    });
    this.live.add(end);
    return end;
  }

  get size() {
    return this.live.size;
  }

  /** Resolves once no call is in flight, or after `ms`. */
  async settled(ms: number): Promise<void> {
    const until = Date.now() + ms;
    while (this.live.size > 0 && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, Math.min(50, until - Date.now())));
  }

  /** Ends every call still in flight (UNAVAILABLE, reason SHUTTING_DOWN). */
  endAll(): void {
    for (const end of [...this.live]) end.end(shuttingDown("the service shut down before the call finished; retry"));
  }
}

/**
 * How one call may end before its handler does: its deadline passes (DEADLINE_EXCEEDED) or the
 * shutdown ends it (SHUTTING_DOWN). `race` makes whatever the transport awaits give up then.
 */
export class CallEnd {
  /** Why the call was ended early, once it was. */
  reason: AppError | undefined;
  private readonly listeners = new Set<(reason: AppError) => void>();
  private readonly timer: NodeJS.Timeout | undefined;

  constructor(
    readonly deadlineMs: number | undefined,
    private readonly release: () => void,
  ) {
    if (deadlineMs !== undefined && Number.isFinite(deadlineMs)) {
      this.timer = setTimeout(() => this.end(deadlineExceeded()), Math.max(0, deadlineMs - Date.now()));
    }
  }

  end(reason: AppError): void {
    if (this.reason) return;
    this.reason = reason;
    this.done();
    for (const listener of this.listeners) listener(reason);
    this.listeners.clear();
  }

  /** The call finished by itself. */
  done(): void {
    clearTimeout(this.timer);
    this.release();
  }

  /** The client went away: whatever waits gives up, though the call was not ended by us. */
  abandon(): void {
    // grpc-js reports every finished call as cancelled: an Error (its stack) only when someone waits.
    if (this.listeners.size > 0) {
      const gone = new Error("the client cancelled the call");
      for (const listener of this.listeners) listener(gone as AppError);
      this.listeners.clear();
    }
    this.done();
  }

  onEnd(listener: (reason: AppError) => void): void {
    if (this.reason) listener(this.reason);
    else this.listeners.add(listener);
  }

  /** `promise`, or a rejection with the reason once the call is ended early. */
  race<T>(promise: Promise<T>, stallMs?: number): Promise<T> {
    if (this.reason) return Promise.reject(this.reason);
    return new Promise<T>((resolve, reject) => {
      const stall = stallMs
        ? setTimeout(() => this.end(new AppError("STREAM_STALLED", `the reader took no data for ${stallMs} ms; the stream was ended`)), stallMs)
        : undefined;
      const settle = () => {
        clearTimeout(stall);
        this.listeners.delete(reject);
      };
      this.listeners.add(reject);
      promise.then(
        (value) => (settle(), resolve(value)),
        (error) => (settle(), reject(error)),
      );
    });
  }
}
