/** A single byte range of a representation of `size` bytes, end inclusive. */
export interface HttpRange {
  start: number;
  end: number;
}

/**
 * Parses a Range header against a size (RFC 9110, one range only). Returns undefined when there
 * is none (or it is not a bytes range, which is ignored), "unsatisfiable" for a range the server
 * cannot serve.
 */
export function parseRange(header: string | undefined, size: number): HttpRange | "unsatisfiable" | undefined {
  if (!header) return undefined;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) return header.trim().startsWith("bytes=") ? "unsatisfiable" : undefined;
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return "unsatisfiable";
  return { start, end };
}
