import type { Knex } from "knex";
import type { Db } from "./transaction";

type Connection = { query(text: string, values: readonly unknown[]): Promise<{ rows: unknown[] }> };
type PooledClient = { acquireConnection(): Promise<Connection>; releaseConnection(connection: Connection): Promise<unknown> };

/** Converted statements by their `?` form; the hot reads have a few dozen shapes. */
const positional = new Map<string, string>();
const POSITIONAL_KEPT = 500;

/** `?` placeholders as $1, $2, ... (statements passed here hold no `?` of their own). */
function toPositional(sql: string): string {
  let text = positional.get(sql);
  if (text === undefined) {
    let n = 0;
    text = sql.replace(/\?/g, () => `$${++n}`);
    if (positional.size >= POSITIONAL_KEPT) positional.clear();
    positional.set(sql, text);
  }
  return text;
}

/**
 * The rows of one read statement (`?` placeholders). Outside a transaction it runs on a pooled
 * connection directly, as an unnamed statement like knex's own: knex's query building and runner
 * were about a tenth of a GetActiveVoiceModel's CPU when the cache missed. In a transaction it is
 * the transaction's statement.
 */
export async function readRows<R>(db: Db, sql: string, bindings: readonly unknown[]): Promise<R[]> {
  if ((db as Knex.Transaction).isTransaction) return (await db.raw(sql, bindings as Knex.RawBinding[])).rows as R[];
  const client = db.client as unknown as PooledClient;
  const connection = await client.acquireConnection();
  try {
    return (await connection.query(toPositional(sql), bindings)).rows as R[];
  } finally {
    await client.releaseConnection(connection);
  }
}
