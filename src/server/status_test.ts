import assert from "node:assert/strict";
import { status as GrpcStatus } from "@grpc/grpc-js";
import {
  AlreadyExistsError,
  type ErrorKind,
  FailedPreconditionError,
  InvalidArgumentError,
  KIND_TEXT,
  NotFoundError,
  NotImplementedError,
  ResourceExhaustedError,
  SnapshotterError,
  UnavailableError,
} from "../util/errors.ts";
import { GRPC_CODE, toRpcStatus } from "./status.ts";

Deno.test("codes are the ones containerd's errdefs turns back into the same class", () => {
  assert.deepEqual({ ...GRPC_CODE }, {
    invalid_argument: 3,
    not_found: 5,
    already_exists: 6,
    failed_precondition: 9,
    unavailable: 14,
    not_implemented: 12,
    resource_exhausted: 8,
    canceled: 1,
    deadline_exceeded: 4,
    unknown: 2,
  });
});

Deno.test("typed errors: code and `<message>: <class text>`", () => {
  const cases: [Error, GrpcStatus, string][] = [
    [new NotFoundError('snapshot "k" does not exist'), 5, 'snapshot "k" does not exist: not found'],
    [new AlreadyExistsError('snapshot "k"'), 6, 'snapshot "k": already exists'],
    [new InvalidArgumentError('key "k" is too long'), 3, 'key "k" is too long: invalid argument'],
    [
      new FailedPreconditionError('cannot remove snapshot "k" with child'),
      9,
      'cannot remove snapshot "k" with child: failed precondition',
    ],
    [new UnavailableError('pool full for "k"'), 14, 'pool full for "k": unavailable'],
    [new NotImplementedError('"k" nope'), 12, '"k" nope: not implemented'],
    [new SnapshotterError("canceled", 'op on "k"'), 1, 'op on "k": context canceled'],
    [
      new SnapshotterError("deadline_exceeded", 'op on "k"'),
      4,
      'op on "k": context deadline exceeded',
    ],
    [new SnapshotterError("resource_exhausted", '"k"'), 8, '"k": resource exhausted'],
    [
      new ResourceExhaustedError(
        'cannot create active snapshot "k": pool "p" is low on data space',
      ),
      8,
      'cannot create active snapshot "k": pool "p" is low on data space: resource exhausted',
    ],
  ];
  for (const [err, code, details] of cases) {
    assert.deepEqual(toRpcStatus(err, { method: "Stat", key: "k" }), { code, details });
  }
});

Deno.test("the class suffix is not doubled when the message already ends with it", () => {
  const st = toRpcStatus(new NotFoundError('snapshot "k": not found'), { key: "k" });
  assert.equal(st.details, 'snapshot "k": not found');
  assert.equal(toRpcStatus(new NotFoundError("not found")).details, "not found");
});

Deno.test("the key is added when the message does not mention it", () => {
  const st = toRpcStatus(new NotFoundError("snapshot does not exist"), {
    method: "Usage",
    key: "default/3/sha256:abc",
  });
  assert.equal(st.code, GrpcStatus.NOT_FOUND);
  assert.equal(st.details, 'usage "default/3/sha256:abc": snapshot does not exist: not found');
  const noMethod = toRpcStatus(new FailedPreconditionError("busy"), { key: "k" });
  assert.equal(noMethod.details, '"k": busy: failed precondition');
});

Deno.test("errno errors from the dm layer are classified; anything else is Unknown", () => {
  const enospc = Object.assign(new Error('cannot create thin device for "k"'), { errno: "ENOSPC" });
  assert.equal(toRpcStatus(enospc).code, GrpcStatus.RESOURCE_EXHAUSTED);
  const ebusy = Object.assign(new Error("device busy"), { errno: "EBUSY" });
  assert.equal(toRpcStatus(ebusy, { method: "Remove", key: "k" }).code, 9);
  assert.deepEqual(toRpcStatus(new TypeError("x is undefined")), {
    code: GrpcStatus.UNKNOWN,
    details: "x is undefined: unknown",
  });
  assert.deepEqual(toRpcStatus("a string was thrown"), {
    code: 2,
    details: "a string was thrown: unknown",
  });
  assert.deepEqual(toRpcStatus(undefined), { code: 2, details: "undefined: unknown" });
  assert.deepEqual(toRpcStatus(new Error("")), { code: 2, details: "unknown" });
});

Deno.test("every error kind has a code and a class text", () => {
  for (const kind of Object.keys(KIND_TEXT) as ErrorKind[]) {
    const st = toRpcStatus(new SnapshotterError(kind, "m"));
    assert.equal(st.code, GRPC_CODE[kind]);
    assert.equal(st.details, `m: ${KIND_TEXT[kind]}`);
  }
});
