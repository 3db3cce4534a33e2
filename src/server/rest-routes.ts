import {
  create,
  fromJson,
  getOption,
  hasOption,
  ScalarType,
  toJson,
  type DescField,
  type DescMessage,
  type DescMethod,
  type DescService,
  type JsonObject,
  type JsonValue,
} from "@bufbuild/protobuf";
import type http from "node:http";
import type { Logger } from "pino";
import { http as httpRule } from "../../gen/google/api/annotations_pb";
import { AppError, invalidArgument } from "../errors";
import type { CallRegistry } from "./call-end";
import type { CallGate } from "./call-gate";
import type { FileRoutes } from "./file-routes";
import type { AnyServerStream, AnyUnary } from "./handlers";
import { sendRestError } from "./http-error";
import { MAX_MESSAGE_BYTES, readBody } from "./request-body";
import { refuseProtoKey } from "./text-check";


/** Repeated fields a REST body may also give as one value (the design document sends a string). */
const ONE_OR_MANY = new Set(["voicemodel.v1.ShareVoiceModelRequest.permissions"]);

type Segment = { literal: string } | { field: DescField };

interface RestRoute {
  verb: string;
  template: string;
  segments: Segment[];
  method: DescMethod;
  /** "*": the body is the request message; "": no body (path and query only). */
  body: string;
  /** The reply field sent as the body ("" = the whole reply). */
  responseBody: DescField | undefined;
}

export interface RestRoutesDeps {
  service: DescService;
  /** The guarded handlers (call-guard.ts): the same rate limits, audit and metrics as every RPC. */
  served: Record<string, unknown>;
  gate: CallGate;
  registry: CallRegistry;
  /** The /v1 export download, which the REST export path serves as it is. */
  files: Pick<FileRoutes, "exportFile">;
  log: Logger;
}

/**
 * The design document's REST paths, read at start-up from the `google.api.http` annotations of
 * the service's methods: path variables and query parameters fill the request's fields (by proto
 * or JSON name), the body is the request's JSON, and the reply is the response's JSON (or its
 * `response_body` field). Each call goes through the same gate and guarded handler as on Connect
 * and gRPC; errors are the flat `{error, code, timestamp, requestId}`.
 */
export function restRoutes(deps: RestRoutesDeps): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  const routes = deps.service.methods.filter((m) => hasOption(m, httpRule)).map(routeOf);
  const prefixes = new Set(routes.map((r) => `/${(r.segments[0] as { literal: string }).literal}`));

  return (req, res) => {
    const [path, query = ""] = (req.url ?? "").split("?", 2);
    const first = path.split("/", 2).join("/");
    if (!prefixes.has(first)) return false;
    const requestId = req.headers["x-request-id"] as string;
    const parts = path.split("/").slice(1);
    // Literal segments win over variables: the most literal template that matches the path
    // decides, then the verb (so /voice-models/expiring is never a model id).
    const matching = routes.filter((r) => matches(r, parts)).sort((a, b) => specificity(b, a));
    const template = matching[0]?.template;
    // HEAD only where GET is a download (the export).
    const served = (r: RestRoute) => r.verb === req.method || (r.verb === "GET" && req.method === "HEAD" && r.method.methodKind === "server_streaming");
    const route = matching.find((r) => r.template === template && served(r));
    if (!route) {
      req.resume();
      const allowed = matching.filter((r) => r.template === template).map((r) => r.verb);
      const message = allowed.length > 0 ? `${req.method} is not served on ${path} (allowed: ${allowed.join(", ")})` : `no route for ${req.method} ${path}`;
      sendRestError(res, new AppError("ROUTE_NOT_FOUND", message), requestId, deps.log);
      return true;
    }
    if (route.method.name === "ExportVoiceModel") {
      deps.files.exportFile(req, res, parts[route.segments.findIndex((s) => "field" in s)], sendRestError);
      return true;
    }
    void serve(req, res, route, parts, new URLSearchParams(query), requestId).catch((error) => sendRestError(res, error, requestId, deps.log));
    return true;
  };

  async function serve(req: http.IncomingMessage, res: http.ServerResponse, route: RestRoute, parts: string[], query: URLSearchParams, requestId: string) {
    const { method } = route;
    const name = `${deps.service.typeName}/${method.name}`;
    const end = deps.registry.begin(undefined);
    let stream: AsyncIterator<unknown> | undefined;
    const controller = new AbortController();
    res.once("close", () => {
      if (!res.writableFinished) {
        controller.abort();
        end.abandon();
      }
    });
    try {
      const body = route.body === "*" ? await readBody(req, MAX_MESSAGE_BYTES) : (req.resume(), undefined);
      const call = {
        method: name,
        authorization: req.headers.authorization,
        requestIdHeader: requestId,
        clientAddress: req.socket.remoteAddress ?? "unknown",
        signal: controller.signal,
        end,
      };
      const ctx = await deps.gate.admit(call, requestId);
      const request = requestOf(route, parts, query, body);
      const handler = deps.served[method.localName];
      let reply: unknown;
      if (method.methodKind === "unary") {
        reply = await end.race((handler as AnyUnary)(request, ctx));
      } else {
        // A server stream (CreateBackup): its last message is the reply.
        const it = (stream = (handler as AnyServerStream)(request, ctx)[Symbol.asyncIterator]());
        for (;;) {
          const next = await end.race(it.next());
          if (next.done) break;
          reply = next.value;
        }
      }
      const json = toJson(method.output, create(method.output, reply as never), { alwaysEmitImplicit: true }) as JsonObject;
      const out = route.responseBody ? (json[route.responseBody.jsonName] ?? null) : json;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(out));
    } catch (error) {
      sendRestError(res, end.reason ?? error, requestId, deps.log);
    } finally {
      // A stream given up early (error, shutdown, client gone) stops its work.
      stream?.return?.(undefined)?.catch(() => undefined);
      end.done();
    }
  }
}

function routeOf(method: DescMethod): RestRoute {
  const rule = getOption(method, httpRule);
  const { case: verb, value } = rule.pattern;
  if (verb === undefined || verb === "custom" || typeof value !== "string") throw new Error(`${method.name}: unsupported google.api.http pattern`);
  const segments: Segment[] = value
    .split("/")
    .slice(1)
    .map((s) => {
      const variable = /^\{(\w+)\}$/.exec(s);
      if (!variable) return { literal: s };
      const field = method.input.fields.find((f) => f.name === variable[1]);
      if (!field) throw new Error(`${method.name}: path variable ${s} is not a field of ${method.input.typeName}`);
      return { field };
    });
  if (!("literal" in segments[0])) throw new Error(`${method.name}: a path must start with a literal segment`);
  const responseBody = rule.responseBody ? method.output.fields.find((f) => f.name === rule.responseBody) : undefined;
  if (rule.responseBody && !responseBody) throw new Error(`${method.name}: response_body ${rule.responseBody} is not a field`);
  return { verb: verb.toUpperCase(), template: value, segments, method, body: rule.body, responseBody };
}

const matches = (route: RestRoute, parts: string[]) =>
  route.segments.length === parts.length && route.segments.every((s, i) => ("literal" in s ? s.literal === parts[i] : parts[i] !== ""));

/** Positive when `a` is more literal than `b` at the first segment where they differ. */
function specificity(a: RestRoute, b: RestRoute): number {
  for (let i = 0; i < a.segments.length; i++) {
    const d = Number("literal" in a.segments[i]) - Number("literal" in b.segments[i]);
    if (d !== 0) return d;
  }
  return 0;
}

/** The request message: the body's JSON, then query parameters, then path variables. */
function requestOf(route: RestRoute, parts: string[], query: URLSearchParams, body: Buffer | undefined): unknown {
  const input = route.method.input;
  const json: JsonObject = body === undefined ? {} : parseBody(input, body);
  for (const key of new Set(query.keys())) {
    if (route.body === "*") throw invalidArgument(key, `query parameters are not read on ${route.verb} ${route.template}; send it in the body`);
    const field = fieldNamed(input, key);
    if (!field) throw invalidArgument(key, `is not a query parameter of ${route.verb} ${route.template}`);
    const values = query.getAll(key);
    json[field.jsonName] = field.fieldKind === "list" ? values.map((v) => scalarJson(field, v)) : scalarJson(field, values[values.length - 1]);
  }
  route.segments.forEach((s, i) => {
    if (!("field" in s)) return;
    const value = pathSegment(parts[i], s.field.jsonName);
    const given = json[s.field.jsonName] ?? json[s.field.name];
    if (given !== undefined && given !== value) {
      throw invalidArgument(s.field.jsonName, `the body says ${JSON.stringify(given)} but the path says ${JSON.stringify(value)}`);
    }
    delete json[s.field.name];
    json[s.field.jsonName] = value;
  });
  try {
    return fromJson(input, json, { ignoreUnknownFields: false });
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    // protobuf-es names the key or field it refused: `key "foo" is unknown`, `cannot decode field pkg.M.model_ids ...`.
    const unknownKey = /key "([^"]+)" is unknown/.exec(text)?.[1];
    const badField = /cannot decode field [\w.]*\.(\w+) from JSON/.exec(text)?.[1]?.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
    const field = unknownKey ?? badField;
    throw invalidArgument(field ?? "body", text);
  }
}

function parseBody(input: DescMessage, body: Buffer): JsonObject {
  if (body.length > MAX_MESSAGE_BYTES) throw new AppError("REQUEST_TOO_LARGE", `request body over ${MAX_MESSAGE_BYTES} bytes`, { field: "body" });
  if (body.length === 0) return {};
  let parsed: JsonValue;
  try {
    parsed = JSON.parse(body.toString("utf8")) as JsonValue;
  } catch (error) {
    throw invalidArgument("body", `not valid JSON (${(error as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw invalidArgument("body", "must be a JSON object");
  refuseProtoKey(body, true);
  for (const field of input.fields) {
    const key = field.jsonName in parsed ? field.jsonName : field.name;
    if (ONE_OR_MANY.has(`${input.typeName}.${field.name}`) && typeof parsed[key] === "string") parsed[key] = [parsed[key]];
  }
  return parsed;
}

const fieldNamed = (input: DescMessage, key: string) => input.fields.find((f) => f.jsonName === key || f.name === key);

/** A query value as JSON: proto3 JSON takes numbers (and 64-bit integers) as strings; booleans it does not. */
function scalarJson(field: DescField, value: string): JsonValue {
  if (field.fieldKind === "scalar" || field.fieldKind === "list") {
    const scalar = field.fieldKind === "scalar" ? field.scalar : field.listKind === "scalar" ? field.scalar : undefined;
    if (scalar === ScalarType.BOOL) {
      if (value === "true" || value === "false") return value === "true";
      throw invalidArgument(field.jsonName, `must be true or false, not ${JSON.stringify(value.slice(0, 64))}`);
    }
  }
  return value;
}

function pathSegment(segment: string, field: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw invalidArgument(field, `path segment ${JSON.stringify(segment.slice(0, 64))} is not valid percent-encoded UTF-8`);
  }
}
