import assert from "node:assert/strict";
import { commandError, DmError, errnoFromText, isErrno, parseErrno } from "./errors.ts";
import { errorKind } from "../util/errors.ts";

Deno.test("dm errors: parseErrno maps real dmsetup failure lines", () => {
  const cases: Array<[string, string | undefined]> = [
    ["device-mapper: message ioctl on tpool  failed: File exists\nCommand failed.", "EEXIST"],
    [
      "device-mapper: message ioctl on tpool  failed: No data available\nCommand failed.",
      "ENODATA",
    ],
    [
      "device-mapper: create ioctl on t1  failed: Device or resource busy\nCommand failed.",
      "EBUSY",
    ],
    [
      "device-mapper: remove ioctl on x  failed: No such device or address\nCommand failed.",
      "ENXIO",
    ],
    ["device-mapper: message ioctl on p  failed: Invalid argument\nCommand failed.", "EINVAL"],
    ["device-mapper: message ioctl on p  failed: No space left on device", "ENOSPC"],
    ["device-mapper: reload ioctl on p  failed: No such device", "ENODEV"],
    ["x failed: No such file or directory", "ENOENT"],
    ["x failed: Operation not permitted", "EPERM"],
    ["device-mapper: resume ioctl on p  failed: Input/output error", "EIO"],
    ["Device /dev/mapper/nonexist not found\nCommand failed.", "ENXIO"],
    ["Device does not exist.\nCommand failed.", "ENXIO"],
    ["Command failed.", undefined],
    ["", undefined],
    ["device-mapper: message ioctl on p  failed: Something new", undefined],
  ];
  for (const [text, errno] of cases) assert.equal(parseErrno(text), errno, text);
});

Deno.test("dm errors: strerror text match is exact and case-insensitive", () => {
  assert.equal(errnoFromText("FILE EXISTS"), "EEXIST");
  assert.equal(errnoFromText("No such device"), "ENODEV");
  assert.equal(errnoFromText("No such device or address"), "ENXIO");
  assert.equal(errnoFromText("busy"), undefined);
});

Deno.test("dm errors: commandError message, fields and classification", () => {
  const err = commandError("dmsetup", ["message", "pool", "0", "create_thin 1"], {
    code: 1,
    stdout: "",
    stderr: "device-mapper: message ioctl on pool  failed: File exists\nCommand failed.\n",
  });
  assert.ok(err instanceof DmError);
  assert.equal(err.name, "DmError");
  assert.equal(err.message, 'dmsetup message pool 0 "create_thin 1" failed: File exists');
  assert.deepEqual(err.command, ["dmsetup", "message", "pool", "0", "create_thin 1"]);
  assert.equal(err.exitCode, 1);
  assert.equal(err.errno, "EEXIST");
  assert.ok(isErrno(err, "EEXIST"));
  assert.ok(!isErrno(err, "EBUSY"));
  assert.match(err.stderr, /^device-mapper: message ioctl/);

  const busy = commandError("dmsetup", ["remove", "x"], {
    code: 1,
    stdout: "",
    stderr: "device-mapper: remove ioctl on x  failed: Device or resource busy\nCommand failed.",
  });
  assert.equal(errorKind(busy), "failed_precondition");

  const missing = commandError("dmsetup", ["info", "x"], {
    code: 1,
    stdout: "",
    stderr: "Device does not exist.\nCommand failed.",
  });
  assert.equal(missing.message, "dmsetup info x failed: Device does not exist.");
  assert.equal(missing.errno, "ENXIO");

  const silent = commandError("dmsetup", ["version"], { code: 3, stdout: "", stderr: "" });
  assert.equal(silent.message, "dmsetup version failed: exit code 3");
  assert.equal(silent.errno, undefined);
  // stdout is used when stderr is empty
  const out = commandError("mkfs.ext4", [""], { code: 1, stdout: "oops\n", stderr: "" });
  assert.equal(out.stderr, "oops");
  assert.equal(out.message, 'mkfs.ext4 "" failed: oops');
});
