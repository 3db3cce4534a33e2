import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { SERVER_ERROR_CODES } from "../../src/metrics/service-metrics";
import { codeLabel } from "../../src/server/call-guard";
import { AppError } from "../../src/errors";
import { REPO_ROOT } from "../helpers/env";

const run = promisify(execFile);

describe("calls ended by a shutdown or by the client's deadline are not server errors", () => {
  test("they have labels of their own, outside the service's server-error codes", () => {
    const shutdown = codeLabel(new AppError("SHUTTING_DOWN", "x"));
    const deadline = codeLabel(new AppError("DEADLINE_EXCEEDED", "x"));
    expect([shutdown, deadline]).toEqual(["SHUTDOWN", "CLIENT_DEADLINE"]);
    expect(SERVER_ERROR_CODES.has(shutdown) || SERVER_ERROR_CODES.has(deadline)).toBe(false);
  });

  test("promtool: the error-rate alert ignores them and still fires on server errors", async () => {
    const { stdout } = await run("promtool", ["test", "rules", path.join(REPO_ROOT, "ops/prometheus/tests/shutdown-labels.test.yml")]);
    expect(stdout).toContain("SUCCESS");
  });
});
