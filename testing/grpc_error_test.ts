import assert from "node:assert/strict";
import { grpcError } from "./grpc_error.ts";

/** A grpc-js call error as far as `isServiceError` looks: an Error with a numeric code. */
function serviceError(code: number, details: string): Error {
  return Object.assign(new Error(`${code} ${details}`), { code, details });
}

Deno.test("grpcError: a call that fails with a gRPC error gives its code and details", async () => {
  assert.deepEqual(await grpcError(Promise.reject(serviceError(5, "not found"))), {
    code: 5,
    details: "not found",
  });
});

Deno.test("grpcError: a call that succeeds fails the test, named by `what`", async () => {
  await assert.rejects(grpcError(Promise.resolve("ok")), {
    name: "AssertionError",
    message: "expected the call to fail",
  });
  await assert.rejects(grpcError(Promise.resolve("ok"), "64 KiB key"), {
    name: "AssertionError",
    message: "64 KiB key: expected the call to fail",
  });
});

Deno.test("grpcError: a call that fails with something else fails the test", async () => {
  await assert.rejects(grpcError(Promise.reject(new Error("boom")), "surrogate key"), {
    name: "AssertionError",
    message: "surrogate key: expected a gRPC error, got Error: boom",
  });
});
