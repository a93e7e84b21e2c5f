/**
 * Typed errors of the snapshotter and the single place that classifies any error into the
 * error classes containerd understands (see `src/server/status.ts` for the gRPC codes).
 *
 * @module
 */

/** Error classes, named after containerd's errdefs. */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "unavailable"
  | "not_implemented"
  | "resource_exhausted"
  | "canceled"
  | "deadline_exceeded"
  | "unknown";

/** The text containerd's errdefs uses for each class; gRPC messages end with it. */
export const KIND_TEXT: Readonly<Record<ErrorKind, string>> = {
  invalid_argument: "invalid argument",
  not_found: "not found",
  already_exists: "already exists",
  failed_precondition: "failed precondition",
  unavailable: "unavailable",
  not_implemented: "not implemented",
  resource_exhausted: "resource exhausted",
  canceled: "context canceled",
  deadline_exceeded: "context deadline exceeded",
  unknown: "unknown",
};

/** An error with a containerd error class. */
export class SnapshotterError extends Error {
  /** The error class. */
  readonly kind: ErrorKind;
  /** Creates the error. */
  constructor(kind: ErrorKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SnapshotterError";
    this.kind = kind;
  }
}

/** The key, parent or name does not exist. */
export class NotFoundError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("not_found", message, options);
    this.name = "NotFoundError";
  }
}

/** The key or name is taken. */
export class AlreadyExistsError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("already_exists", message, options);
    this.name = "AlreadyExistsError";
  }
}

/** The request is malformed. Nothing was changed. */
export class InvalidArgumentError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("invalid_argument", message, options);
    this.name = "InvalidArgumentError";
  }
}

/** The request is valid but the state does not allow it (e.g. removing a parent). */
export class FailedPreconditionError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("failed_precondition", message, options);
    this.name = "FailedPreconditionError";
  }
}

/** The pool or the service cannot serve now (pool read-only, failed, shutting down). */
export class UnavailableError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("unavailable", message, options);
    this.name = "UnavailableError";
  }
}

/**
 * A resource ran short (thin-pool data or metadata space below `min_free_space`, or gone):
 * nothing was changed; the call works again once space is freed or the pool extended.
 */
export class ResourceExhaustedError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("resource_exhausted", message, options);
    this.name = "ResourceExhaustedError";
  }
}

/** The operation is not supported. */
export class NotImplementedError extends SnapshotterError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super("not_implemented", message, options);
    this.name = "NotImplementedError";
  }
}

/**
 * Classifies any thrown value. Errors that carry an explicit kind keep it; errors from the
 * device-mapper layer (anything with an `errno` property) are classified by errno; the rest
 * are `unknown`.
 */
export function errorKind(err: unknown): ErrorKind {
  if (err instanceof SnapshotterError) return err.kind;
  if (err && typeof err === "object") {
    const errno = (err as { errno?: unknown }).errno;
    switch (errno) {
      case "ENOSPC":
        return "resource_exhausted";
      case "EBUSY":
        return "failed_precondition";
      case "EINVAL":
        return "invalid_argument";
    }
    const kind = (err as { kind?: unknown }).kind;
    if (typeof kind === "string" && kind in KIND_TEXT) return kind as ErrorKind;
  }
  return "unknown";
}

/** `message` of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
