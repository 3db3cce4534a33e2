import path from "node:path";

export interface BannerFacts {
  host: string;
  httpPort: number;
  grpcPort: number;
  database: "pglite" | "postgres";
  dataDir: string;
}

/** What a person who just ran `npm start` in a terminal needs next; logs stay JSON for machines. */
export function startBanner(facts: BannerFacts): string {
  const host = facts.host === "0.0.0.0" || facts.host === "::" ? "localhost" : facts.host;
  const http = `http://${host.includes(":") ? `[${host}]` : host}:${facts.httpPort}`;
  const database =
    facts.database === "pglite" ? `embedded PGlite in ${path.resolve(facts.dataDir)}` : "PostgreSQL (DATABASE_URL)";
  return [
    "",
    "  Voice model service is running",
    "",
    `  Connect JSON, gRPC-Web  ${http}   (index: ${http}/ ; ${http}/healthz ${http}/readyz ${http}/metrics)`,
    `  gRPC (h2c, reflection)  ${host}:${facts.grpcPort}`,
    `  Data                    ${database}`,
    "",
    "  A token for a user:     npm run -s token -- alice        (--role admin|service for back ends)",
    `  List the methods:       npx buf curl --protocol grpc --http2-prior-knowledge --list-methods http://${host}:${facts.grpcPort}`,
    "  Docs:                   README.md; the contract with every RPC and field in proto/voicemodel/v1/",
    "  Stop:                   Ctrl-C",
    "",
  ].join("\n") + "\n";
}
