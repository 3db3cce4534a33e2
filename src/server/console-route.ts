import fs from "node:fs";
import type http from "node:http";
import path from "node:path";

// The page's policy: its own script and stylesheet only, calls to this origin only, no framing.
// Charts draw on canvas; the bundle sets element styles through the CSSOM, which style-src allows.
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
};

/**
 * Where the built console is: dist/console beside src/ in a checkout (`npm run build:console`),
 * or console/ beside dist/src in the image (the runtime stage copies dist/ whole). CONSOLE_DIR
 * points elsewhere. app.js tells a build from the sources (console/ in a checkout has none).
 */
export function consoleDir(): string | undefined {
  const top = path.resolve(__dirname, "..", "..");
  const candidates = [process.env.CONSOLE_DIR, path.join(top, "dist", "console"), path.join(top, "console")];
  return candidates.find((dir): dir is string => !!dir && fs.existsSync(path.join(dir, "app.js")));
}

/** Serves GET/HEAD /console/*: the built files, each with the console's security headers. */
export function serveConsole(req: http.IncomingMessage, res: http.ServerResponse): boolean {
  const url = req.url ?? "";
  if (url !== "/console" && !url.startsWith("/console/") && !url.startsWith("/console?")) return false;
  if (req.method !== "GET" && req.method !== "HEAD") return false;
  const headers = {
    "content-security-policy": CONSOLE_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
  };
  const pathname = url.split("?")[0];
  if (pathname === "/console") {
    res.writeHead(308, { ...headers, location: "/console/" }).end();
    return true;
  }
  const name = pathname === "/console/" ? "index.html" : pathname.slice("/console/".length);
  const dir = consoleDir();
  // Flat folder: a name is one plain file name, never a path.
  const type = TYPES[path.extname(name)];
  const file = dir && /^[A-Za-z0-9._-]+$/.test(name) && !name.startsWith(".") && type ? path.join(dir, name) : undefined;
  let body: Buffer | undefined;
  try {
    body = file ? fs.readFileSync(file) : undefined;
  } catch {
    body = undefined;
  }
  if (!body) {
    const text = dir ? "not found\n" : "the console is not built: run `npm run build:console`\n";
    res.writeHead(dir ? 404 : 503, { ...headers, "content-type": "text/plain; charset=utf-8" }).end(text);
    return true;
  }
  res.writeHead(200, {
    ...headers,
    "content-type": type,
    "content-length": body.length,
    // The page always asks again; a new build changes the files under the same names.
    "cache-control": "no-cache",
  });
  res.end(req.method === "HEAD" ? undefined : body);
  return true;
}
