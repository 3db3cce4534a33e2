/**
 * Keeps up to `depth` items of `source` in production ahead of the consumer: while a transport
 * waits for the socket to drain one decrypted chunk, the next ones are read and decrypted.
 * Without it, reading, decrypting and sending take turns and a download runs at about half speed.
 * Memory: at most `depth` items more per stream.
 */
export async function* readAhead<T>(source: AsyncIterable<T>, depth: number): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  const pending: Array<Promise<IteratorResult<T>>> = [];
  const pull = () => {
    const next = it.next();
    // Awaited in order below; this only keeps a failure from being reported as unhandled first.
    next.catch(() => undefined);
    pending.push(next);
  };
  try {
    pull();
    // Nothing is read ahead of the first item until the consumer asks for the second: a reader
    // that stalls at once (a shut flow-control window) holds one item, not depth + 1.
    let reading = false;
    for (;;) {
      const next = await pending.shift()!;
      if (next.done) return;
      if (reading) while (pending.length < depth) pull();
      yield next.value;
      if (!reading) {
        reading = true;
        while (pending.length < depth) pull();
      }
    }
  } finally {
    // A consumer that stops early (cancelled download) ends the source too.
    await it.return?.();
  }
}
