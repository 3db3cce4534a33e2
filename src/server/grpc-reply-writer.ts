import type * as grpc from "@grpc/grpc-js";
import type { CallEnd } from "./call-end";

/**
 * Writes a server stream's replies with several in flight, yet keeps a call that ends early able
 * to send its trailers at once.
 *
 * HTTP/2 sends trailers after every byte written to the stream before them, and grpc-js and
 * node:http2 buffer whatever is written: with four messages handed to grpc-js, a slow reader's
 * DEADLINE_EXCEEDED waited behind them until the stream was reset. So only one message at a time
 * is handed to grpc-js, and the rest wait here, prepared; the next is handed over from the
 * previous one's write callback, so the connection never waits on the handler, and a call that
 * ends early drops what waits here: its trailers follow at most one message.
 */
export class GrpcReplyWriter {
  private readonly waiting: unknown[] = [];
  private writing = false;
  private failed: Error | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly call: grpc.ServerWritableStream<unknown, unknown>,
    private readonly end: CallEnd,
    /** Replies taken from the handler and not yet written (the one being written included). */
    private readonly inFlight: number,
    /** A reader that takes nothing for this long has its call ended (STREAM_STALLED). */
    private readonly stallMs: number,
  ) {}

  /** Queues `reply`; resolves once there is room for the next one. */
  async write(reply: unknown): Promise<void> {
    this.waiting.push(reply);
    this.pump();
    while (this.pending() >= this.inFlight) await this.progress();
  }

  /** Resolves once every reply has gone into the connection. */
  async flushed(): Promise<void> {
    while (this.pending() > 0) await this.progress();
  }

  /** Forgets the replies not yet handed to grpc-js (the call ended early). */
  drop(): void {
    this.waiting.length = 0;
  }

  private pending(): number {
    if (this.failed) throw this.failed;
    return this.waiting.length + (this.writing ? 1 : 0);
  }

  /** The next write completing, the call ending, or the stall timeout. */
  private progress(): Promise<void> {
    return this.end.race(new Promise<void>((resolve) => (this.wake = resolve)), this.stallMs);
  }

  private pump(): void {
    if (this.writing || this.waiting.length === 0 || this.end.reason || this.call.cancelled) return;
    this.writing = true;
    this.call.write(this.waiting.shift(), (error?: Error | null) => {
      this.writing = false;
      if (error) this.failed = error;
      else this.pump();
      const wake = this.wake;
      this.wake = undefined;
      wake?.();
    });
  }
}
