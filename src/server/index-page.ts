import type http from "node:http";

/** The service's own HTTP routes, for GET / (a newcomer's or a browser's first request). */
const LINKS = [
  { href: "/healthz", title: "liveness probe" },
  { href: "/readyz", title: "readiness probe (503 while the database is unreachable)" },
  { href: "/metrics", title: "Prometheus metrics" },
  { href: "/console/", title: "web console (sign in with a token)" },
];

/** Answers GET / (and HEAD /) with a small index: HTML for browsers, JSON otherwise. */
export function serveIndex(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  if (req.url !== "/" || (req.method !== "GET" && req.method !== "HEAD")) return false;
  const wantsHtml = /\btext\/html\b/.test(req.headers.accept ?? "");
  const body = wantsHtml
    ? `<!doctype html><meta charset="utf-8"><title>Voice model service</title><h1>Voice model service</h1>` +
      `<p>Connect JSON and gRPC-Web on this port; gRPC on the gRPC port. The contract: proto/voicemodel/v1.</p><ul>` +
      LINKS.map((l) => `<li><a href="${l.href}">${l.href}</a> ${l.title}</li>`).join("") +
      `</ul>\n`
    : JSON.stringify({ service: "voice-model-service", links: LINKS, contract: "proto/voicemodel/v1" }) + "\n";
  res.writeHead(200, {
    "content-type": wantsHtml ? "text/html; charset=utf-8" : "application/json",
    "content-length": Buffer.byteLength(body),
    vary: "accept",
  });
  res.end(req.method === "HEAD" ? undefined : body);
  return true;
}
