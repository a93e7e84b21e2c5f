/**
 * Where the metrics endpoint listens: `HOST:PORT` (TCP; `[v6]:PORT`; an empty host is every
 * interface) or `unix:PATH` (a unix socket; `unix://PATH` too). Pure string work, shared by the
 * config layer, which checks `metrics_address`, and the endpoint, which binds it.
 *
 * A parsed TCP port is an integer in 0..65535 (0: the kernel picks one); a parsed unix path is
 * what {@linkcode socketPath} accepts (absolute, no NUL, fits `sun_path`).
 *
 * @module
 */
import { socketPath } from "./socket_path.ts";

/** A parsed listen address. */
export type ListenAddress =
  | { transport: "tcp"; hostname: string; port: number }
  | { transport: "unix"; path: string };

/** The address cannot be used. */
export class ListenAddressError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenAddressError";
  }
}

/**
 * Parses `HOST:PORT` or `unix:PATH`. A relative unix path resolves against the working
 * directory (the config layer refuses one in a file). Throws {@linkcode ListenAddressError}
 * with the reason.
 */
export function parseListenAddress(text: string): ListenAddress {
  const fail = (why: string, cause?: unknown): never => {
    throw new ListenAddressError(
      `Cannot use address ${JSON.stringify(text)}: ${why} (use HOST:PORT or unix:PATH)`,
      { cause },
    );
  };
  if (text.startsWith("unix:")) {
    try {
      return { transport: "unix", path: socketPath(text) };
    } catch (err) {
      return fail((err as Error).message.replace(/^Cannot use address "[^"]*": /, ""), err);
    }
  }
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:/[\]]*)):(\d{1,5})$/.exec(text);
  if (!m) return fail(text.includes(":") ? "not a host and port" : "no port");
  const port = Number(m[3]);
  if (port > 65535) return fail(`port ${port} is above 65535`);
  const hostname = m[1] ?? (m[2] === "" ? "0.0.0.0" : m[2]);
  return { transport: "tcp", hostname, port };
}

/** `HOST:PORT` or `unix:PATH` of a parsed address (IPv6 hosts bracketed). */
export function formatListenAddress(address: ListenAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return `${host}:${address.port}`;
}
