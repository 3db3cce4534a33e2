import { CRC32C } from "@google-cloud/storage";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A GCS JSON API server on loopback, in memory: our test double of the protocol, driven by the
 * real @google-cloud/storage client. It serves what GcsBlobStore and the tests use: simple,
 * multipart and resumable uploads (one or several chunks), media downloads with Range, object
 * metadata, list by prefix with pages, rewrite (copy; move is copy + delete) and delete. Buckets
 * exist on first use. Anything else answers 501 so a new client call shows up as a failure.
 */
export interface GcsEmulator {
  /** http://127.0.0.1:<port>: the apiEndpoint for @google-cloud/storage. */
  endpoint: string;
  projectId: string;
  stop(): Promise<void>;
}

interface StoredObject {
  bucket: string;
  name: string;
  data: Buffer;
  contentType: string;
  generation: string;
  created: string;
  updated: string;
}

interface UploadSession {
  bucket: string;
  name: string;
  contentType: string;
  chunks: Buffer[];
  received: number;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function hashes(data: Buffer) {
  const crc = new CRC32C();
  crc.update(data);
  return { crc32c: crc.toString(), md5Hash: createHash("md5").update(data).digest("base64") };
}

function resource(o: StoredObject) {
  return {
    kind: "storage#object",
    id: `${o.bucket}/${o.name}/${o.generation}`,
    name: o.name,
    bucket: o.bucket,
    generation: o.generation,
    metageneration: "1",
    contentType: o.contentType,
    size: String(o.data.length),
    timeCreated: o.created,
    updated: o.updated,
    storageClass: "STANDARD",
    ...hashes(o.data),
  };
}

/** Splits a multipart/related upload into its JSON metadata and media parts. */
function multipart(body: Buffer, contentType: string): { metadata: Record<string, string>; media: Buffer } {
  const boundary = /boundary="?([^";]+)"?/.exec(contentType)?.[1];
  if (!boundary) throw new ApiError(400, "multipart upload without a boundary");
  const text = body.toString("latin1");
  const parts = text.split(`--${boundary}`).slice(1, -1);
  if (parts.length !== 2) throw new ApiError(400, `multipart upload with ${parts.length} parts`);
  const content = parts.map((p) => p.slice(p.indexOf("\r\n\r\n") + 4, p.length - 2));
  return { metadata: JSON.parse(content[0]), media: Buffer.from(content[1], "latin1") };
}

export async function startGcsEmulator(): Promise<GcsEmulator> {
  const projectId = "demo-voice-models";
  const objects = new Map<string, StoredObject>();
  const sessions = new Map<string, UploadSession>();
  let generation = Date.now() * 1000;
  let endpoint = "";
  const keyOf = (bucket: string, name: string) => `${bucket}\u0000${name}`;
  const find = (bucket: string, name: string) => {
    const found = objects.get(keyOf(bucket, name));
    if (!found) throw new ApiError(404, `No such object: ${bucket}/${name}`);
    return found;
  };
  const store = (bucket: string, name: string, data: Buffer, contentType = "application/octet-stream") => {
    if (!name) throw new ApiError(400, "an object needs a name");
    const now = new Date().toISOString();
    const previous = objects.get(keyOf(bucket, name));
    const stored = { bucket, name, data, contentType, generation: String(++generation), created: previous?.created ?? now, updated: now };
    objects.set(keyOf(bucket, name), stored);
    return stored;
  };
  const json = (res: http.ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { "content-type": "application/json; charset=UTF-8" }).end(JSON.stringify(body));
  };

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const method = req.method ?? "GET";
    const route = url.pathname.replace(/^\/download(?=\/storage\/)/, "");
    let m: RegExpExecArray | null;

    // Uploads: /upload/storage/v1/b/{bucket}/o?uploadType=media|multipart|resumable
    if ((m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(route)) && method === "POST") {
      const bucket = decodeURIComponent(m[1]);
      const type = url.searchParams.get("uploadType");
      const body = await readBody(req);
      if (type === "media") return json(res, 200, resource(store(bucket, url.searchParams.get("name") ?? "", body, req.headers["content-type"])));
      if (type === "multipart") {
        const { metadata, media } = multipart(body, String(req.headers["content-type"]));
        return json(res, 200, resource(store(bucket, metadata.name ?? url.searchParams.get("name") ?? "", media, metadata.contentType)));
      }
      if (type === "resumable") {
        const metadata = body.length ? (JSON.parse(body.toString("utf8")) as Record<string, string>) : {};
        const id = randomBytes(12).toString("hex");
        const name = url.searchParams.get("name") ?? metadata.name ?? "";
        const contentType = String(req.headers["x-upload-content-type"] ?? metadata.contentType ?? "application/octet-stream");
        sessions.set(id, { bucket, name, contentType, chunks: [], received: 0 });
        res.writeHead(200, { location: `${endpoint}/upload/storage/v1/b/${m[1]}/o?uploadType=resumable&upload_id=${id}` }).end();
        return;
      }
      throw new ApiError(400, `unknown uploadType ${type}`);
    }
    // A resumable session: Content-Range "bytes a-b/total", "bytes a-*/total" or a status query "bytes */total".
    if ((m = /^\/upload\/storage\/v1\/b\/([^/]+)\/o$/.exec(route)) && method === "PUT") {
      const session = sessions.get(url.searchParams.get("upload_id") ?? "");
      if (!session) throw new ApiError(404, "no such upload session");
      const body = await readBody(req);
      const range = /^bytes (\*|(\d+)-(\d+|\*))\/(\d+|\*)$/.exec(String(req.headers["content-range"] ?? ""));
      if (!range) throw new ApiError(400, `bad Content-Range ${req.headers["content-range"]}`);
      if (range[1] !== "*") {
        const start = Number(range[2]);
        if (start !== session.received) throw new ApiError(400, `chunk starts at ${start}, ${session.received} bytes received`);
        session.chunks.push(body);
        session.received += body.length;
      }
      const total = range[4] === "*" ? undefined : Number(range[4]);
      // "a-*" streams the rest of the object in this one request: its end is the object's end.
      const complete = total === session.received || (range[3] === "*" && total === undefined);
      if (!complete) {
        const headers: http.OutgoingHttpHeaders = session.received ? { range: `bytes=0-${session.received - 1}` } : {};
        res.writeHead(308, headers).end();
        return;
      }
      sessions.delete(url.searchParams.get("upload_id")!);
      return json(res, 200, resource(store(session.bucket, session.name, Buffer.concat(session.chunks), session.contentType)));
    }
    // Rewrite (copy): /storage/v1/b/{b}/o/{name}/rewriteTo/b/{b2}/o/{name2}
    if ((m = /^\/storage\/v1\/b\/([^/]+)\/o\/(.+)\/(?:rewriteTo|copyTo)\/b\/([^/]+)\/o\/(.+)$/.exec(route)) && method === "POST") {
      await readBody(req);
      const from = find(decodeURIComponent(m[1]), decodeURIComponent(m[2]));
      const to = store(decodeURIComponent(m[3]), decodeURIComponent(m[4]), from.data, from.contentType);
      const size = String(to.data.length);
      if (/\/copyTo\//.test(route)) return json(res, 200, resource(to));
      return json(res, 200, { kind: "storage#rewriteResponse", totalBytesRewritten: size, objectSize: size, done: true, resource: resource(to) });
    }
    // List: /storage/v1/b/{bucket}/o?prefix=&maxResults=&pageToken=
    if ((m = /^\/storage\/v1\/b\/([^/]+)\/o$/.exec(route)) && method === "GET") {
      const bucket = decodeURIComponent(m[1]);
      const prefix = url.searchParams.get("prefix") ?? "";
      const max = Math.min(Number(url.searchParams.get("maxResults") ?? 1000) || 1000, 1000);
      const after = url.searchParams.get("pageToken") ?? "";
      const names = [...objects.values()].filter((o) => o.bucket === bucket && o.name.startsWith(prefix) && o.name > after).map((o) => o.name).sort();
      const page = names.slice(0, max);
      return json(res, 200, {
        kind: "storage#objects",
        items: page.map((name) => resource(find(bucket, name))),
        ...(names.length > max ? { nextPageToken: page.at(-1) } : {}),
      });
    }
    // One object: metadata, media (alt=media, with Range), delete.
    if ((m = /^\/storage\/v1\/b\/([^/]+)\/o\/(.+)$/.exec(route))) {
      const bucket = decodeURIComponent(m[1]);
      const name = decodeURIComponent(m[2]);
      if (method === "DELETE") {
        find(bucket, name);
        objects.delete(keyOf(bucket, name));
        res.writeHead(204).end();
        return;
      }
      if (method === "GET" && url.searchParams.get("alt") === "media") {
        const o = find(bucket, name);
        const size = o.data.length;
        const { crc32c, md5Hash } = hashes(o.data);
        const headers: http.OutgoingHttpHeaders = {
          "content-type": o.contentType,
          "x-goog-generation": o.generation,
          "x-goog-hash": `crc32c=${crc32c},md5=${md5Hash}`,
          "x-goog-stored-content-length": String(size),
          "x-goog-stored-content-encoding": "identity",
          "accept-ranges": "bytes",
        };
        const range = /^bytes=(\d*)-(\d*)$/.exec(String(req.headers.range ?? ""));
        if (!range) return void res.writeHead(200, { ...headers, "content-length": size }).end(o.data);
        let start = range[1] === "" ? Math.max(0, size - Number(range[2])) : Number(range[1]);
        let end = range[1] === "" || range[2] === "" ? size - 1 : Math.min(Number(range[2]), size - 1);
        if (start >= size) {
          res.writeHead(416, { "content-range": `bytes */${size}` }).end();
          return;
        }
        [start, end] = [start, Math.max(start, end)];
        res.writeHead(206, { ...headers, "content-range": `bytes ${start}-${end}/${size}`, "content-length": end - start + 1 });
        res.end(o.data.subarray(start, end + 1));
        return;
      }
      if (method === "GET") return json(res, 200, resource(find(bucket, name)));
    }
    throw new ApiError(501, `the test GCS server does not implement ${method} ${url.pathname}`);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const status = error instanceof ApiError ? error.status : 500;
      const message = error instanceof Error ? error.message : String(error);
      if (!res.headersSent) json(res, status, { error: { code: status, message, errors: [{ message, reason: status === 404 ? "notFound" : "invalid" }] } });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    endpoint,
    projectId,
    async stop() {
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
