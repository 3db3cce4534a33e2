import { Code } from "@connectrpc/connect";
import fs from "node:fs";
import path from "node:path";
import { ErrorCodes } from "../src/errors";

// The proto documents the closed list of error reasons for callers; src/errors.ts is the list the
// service sends. Both must name the same reasons with the same codes.
const PROTO_DIR = path.join(__dirname, "..", "proto", "voicemodel", "v1");

/** Every `//   REASON (CODE): ...` line of the proto's reason list, wherever it is. */
function protoReasons(): Map<string, string> {
  const reasons = new Map<string, string>();
  for (const file of fs.readdirSync(PROTO_DIR).filter((f) => f.endsWith(".proto"))) {
    const text = fs.readFileSync(path.join(PROTO_DIR, file), "utf8");
    const start = text.indexOf("Its reason is one of");
    if (start < 0) continue;
    const lines = text.slice(start).split("\n").slice(2);
    for (const line of lines) {
      const entry = /^\/\/ {3}([A-Z][A-Z0-9_]*) \(([A-Z_]+)\):/.exec(line);
      if (!entry) break;
      if (reasons.has(entry[1])) throw new Error(`${entry[1]} is listed twice`);
      reasons.set(entry[1], entry[2]);
    }
  }
  return reasons;
}

/** Code.PermissionDenied -> "PERMISSION_DENIED", as the proto writes gRPC codes. */
const grpcName = (code: Code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();

test("the proto's list of error reasons is src/errors.ts ErrorCodes, code for code", () => {
  const documented = protoReasons();
  expect(documented.size).toBeGreaterThan(10);
  const served = new Map(Object.entries(ErrorCodes).map(([reason, code]) => [reason, grpcName(code)]));
  expect(Object.fromEntries([...documented].sort())).toEqual(Object.fromEntries([...served].sort()));
});
