import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * A secret the embedded mode keeps in a file of its data folder: created on first use with mode
 * 0600, then read. The value is written to a file of its own and linked into place, which fails
 * if the name exists: processes starting together agree on one value, and none reads a file
 * another is still writing (an exclusive create, then a write, left a moment where it was empty).
 */
export function readOrCreateSecretFile(dataDir: string, name: string, create: () => string): { file: string; value: string } {
  const file = path.join(dataDir, name);
  fs.mkdirSync(dataDir, { recursive: true });
  if (!fs.existsSync(file)) {
    const draft = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.new`;
    try {
      fs.writeFileSync(draft, create() + "\n", { flag: "wx", mode: 0o600 });
      fs.linkSync(draft, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    } finally {
      fs.rmSync(draft, { force: true });
    }
  }
  return { file, value: fs.readFileSync(file, "utf8").trim() };
}
