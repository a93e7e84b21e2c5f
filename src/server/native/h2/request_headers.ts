/**
 * The rules that make a request's header list well-formed (RFC 9113 §8.2 and §8.3.1). A
 * malformed request is a stream error of type PROTOCOL_ERROR: the server resets that stream
 * and keeps the connection, as Go's HTTP/2 server (under grpc-go) does.
 *
 * @module
 */
import type { HeaderField } from "./hpack.ts";

const REQUEST_PSEUDO = new Set([":method", ":scheme", ":authority", ":path"]);

/** Connection-specific fields, which HTTP/2 forbids (RFC 9113 §8.2.2). */
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "proxy-connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
]);

/**
 * A field name may hold no control character, space, upper-case letter or byte past 0x7e; only
 * a pseudo-header starts with ":" (RFC 9113 §8.2.1).
 */
function badName(name: string): boolean {
  if (name.length === 0) return true;
  for (let i = name.charCodeAt(0) === 0x3a ? 1 : 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 0x20 || (c >= 0x41 && c <= 0x5a) || c >= 0x7f || c === 0x3a) return true;
  }
  return name === ":";
}

/** A field value may not hold NUL, CR or LF (RFC 9113 §8.2.1). */
function badValue(value: string): boolean {
  return /[\0\r\n]/.test(value);
}

/** Checks the fields every header list shares; returns the first problem. */
function fieldProblem(name: string, value: string): string | undefined {
  if (badName(name)) return `invalid field name ${JSON.stringify(name)}`;
  if (badValue(value)) return `invalid value of field ${JSON.stringify(name)}`;
  if (CONNECTION_SPECIFIC.has(name)) return `connection-specific field "${name}"`;
  if (name === "te" && value !== "trailers") return `te "${value}" is not "trailers"`;
  return undefined;
}

/**
 * Why the request header list `headers` is malformed, or undefined if it is well-formed:
 * pseudo-headers only the four of a request, each once and before every regular field;
 * `:method` always, and `:scheme` plus a non-empty `:path` unless it is a CONNECT, which has
 * `:authority` instead; field names in lower case; no connection-specific field; `te` only
 * "trailers"; `content-length` a decimal number.
 */
export function malformedRequest(headers: readonly HeaderField[]): string | undefined {
  const pseudo = new Map<string, string>();
  let regular = false;
  for (const [name, value] of headers) {
    const problem = fieldProblem(name, value);
    if (problem) return problem;
    if (name.startsWith(":")) {
      if (!REQUEST_PSEUDO.has(name)) return `pseudo-header "${name}" in a request`;
      if (regular) return `pseudo-header "${name}" after a regular field`;
      if (pseudo.has(name)) return `pseudo-header "${name}" repeated`;
      pseudo.set(name, value);
      continue;
    }
    regular = true;
    if (name === "content-length" && !/^[0-9]{1,15}$/.test(value)) {
      return `content-length "${value}" is not a number`;
    }
  }
  const method = pseudo.get(":method");
  if (!method) return 'no ":method"';
  if (method === "CONNECT") {
    if (!pseudo.has(":authority")) return 'CONNECT without ":authority"';
    if (pseudo.has(":scheme") || pseudo.has(":path")) {
      return 'CONNECT with ":scheme" or ":path"';
    }
    return undefined;
  }
  if (!pseudo.get(":scheme")) return 'no ":scheme"';
  if (!pseudo.get(":path")) return 'no ":path"';
  return undefined;
}

/** Why the trailer list `headers` is malformed (a pseudo-header, or a bad field), or undefined. */
export function malformedTrailers(headers: readonly HeaderField[]): string | undefined {
  for (const [name, value] of headers) {
    if (name.startsWith(":")) return `pseudo-header "${name}" in trailers`;
    const problem = fieldProblem(name, value);
    if (problem) return problem;
  }
  return undefined;
}
