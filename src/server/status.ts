/**
 * The one place that turns an error into a gRPC status for containerd.
 *
 * The class comes from `errorKind()` (src/errors.ts); the code is one containerd's errdefs
 * converts back to the same class; the message ends in `: <class text>` (errdefs strips that
 * suffix and re-wraps the class) and names the snapshot key.
 *
 * @module
 */
import { type ErrorKind, errorKind, errorMessage, KIND_TEXT } from "../util/errors.ts";
import { boundText, quote } from "../util/quote.ts";
import { Code } from "./codes.ts";

/** gRPC status codes by error class. */
export const GRPC_CODE: Readonly<Record<ErrorKind, Code>> = {
  invalid_argument: Code.INVALID_ARGUMENT,
  not_found: Code.NOT_FOUND,
  already_exists: Code.ALREADY_EXISTS,
  failed_precondition: Code.FAILED_PRECONDITION,
  unavailable: Code.UNAVAILABLE,
  not_implemented: Code.UNIMPLEMENTED,
  // containerd ≥ 1.7 maps 8 back to ErrResourceExhausted; 1.6 shows it as unknown either way.
  resource_exhausted: Code.RESOURCE_EXHAUSTED,
  canceled: Code.CANCELLED,
  deadline_exceeded: Code.DEADLINE_EXCEEDED,
  unknown: Code.UNKNOWN,
};

/** A gRPC status as sent to the client. */
export interface RpcStatus {
  code: Code;
  /** Sent as `grpc-message`. */
  details: string;
}

/** What the failing call was about, used to make the message self-explanatory. */
export interface StatusContext {
  /** RPC name, e.g. `Stat`. */
  method?: string;
  /** The snapshot key (or commit name) the call named; "" when none. */
  key?: string;
}

/**
 * The status for `err`: code from the error class, message `<message>: <class text>`, prefixed
 * with `<method> "<key>": ` when the message does not already mention the key. The key is
 * shortened and the message capped (`util/quote.ts`); the class suffix is always kept.
 */
export function toRpcStatus(err: unknown, context: StatusContext = {}): RpcStatus {
  const kind = errorKind(err);
  const suffix = `: ${KIND_TEXT[kind]}`;
  let message = errorMessage(err).trim();
  const { key, method } = context;
  if (key && !message.includes(key) && !message.includes(quote(key))) {
    const prefix = `${method ? method.toLowerCase() + " " : ""}${quote(key)}`;
    message = message ? `${prefix}: ${message}` : prefix;
  }
  // what a message echoes of the request is bounded: a 64 KiB key must not make the status
  // larger than the client takes as a header (it would fail the call as CANCELLED instead)
  message = boundText(message);
  if (message === KIND_TEXT[kind]) message = "";
  if (!message.endsWith(suffix)) message = message ? message + suffix : KIND_TEXT[kind];
  return { code: GRPC_CODE[kind], details: message };
}
