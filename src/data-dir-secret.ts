import fs from "node:fs";
import path from "node:path";

/**
 * A secret the embedded mode keeps in a file of its data folder: created on first use with mode
 * 0600, then read. Creation is exclusive ("wx"), so processes starting together agree on one value.
 */
export function readOrCreateSecretFile(dataDir: string, name: string, create: () => string): { file: string; value: string } {
  const file = path.join(dataDir, name);
  fs.mkdirSync(dataDir, { recursive: true });
  try {
    fs.writeFileSync(file, create() + "\n", { flag: "wx", mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
  }
  return { file, value: fs.readFileSync(file, "utf8").trim() };
}
