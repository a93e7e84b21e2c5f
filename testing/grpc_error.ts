/**
 * The gRPC error of a call that a test expects to fail: {@linkcode grpcError} resolves with its
 * status code and details, and fails the test (an assertion error) when the call succeeds or
 * rejects with something that is not a grpc-js call error.
 *
 * @module
 */
import assert from "node:assert/strict";
import { isServiceError } from "./snapshots_client.ts";

/** The status code and details of a failed gRPC call. */
export interface GrpcFailure {
  code: number;
  details: string;
}

/**
 * Awaits `call`, which must reject with a grpc-js call error, and returns its code and
 * details; `what`, when given, opens the assertion messages.
 */
export async function grpcError(call: Promise<unknown>, what?: string): Promise<GrpcFailure> {
  const prefix = what === undefined ? "" : `${what}: `;
  try {
    await call;
  } catch (err) {
    assert.ok(isServiceError(err), `${prefix}expected a gRPC error, got ${err}`);
    return { code: err.code, details: err.details };
  }
  assert.fail(`${prefix}expected the call to fail`);
}
