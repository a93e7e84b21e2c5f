import assert from "node:assert/strict";
import { DmError } from "./errors.ts";
import { MAX_DEVICE_NAME_BYTES, validateDeviceName } from "./names.ts";

Deno.test("validateDeviceName accepts plain names up to 127 bytes", () => {
  for (const name of ["pool", "vg0-containerd--pool-tpool", "a.b_c", "x".repeat(127)]) {
    validateDeviceName(name);
  }
  assert.equal(MAX_DEVICE_NAME_BYTES, 127);
});

Deno.test("validateDeviceName rejects names dmsetup would misread, with EINVAL", () => {
  const reason = (name: string) => {
    try {
      validateDeviceName(name);
    } catch (err) {
      assert.ok(err instanceof DmError);
      assert.equal(err.errno, "EINVAL");
      return err.message;
    }
    assert.fail(`${JSON.stringify(name)} was accepted`);
  };
  assert.equal(reason(""), 'Invalid device-mapper name "": empty');
  assert.equal(reason("a/b"), `Invalid device-mapper name "a/b": contains '/'`);
  assert.match(reason("-x"), /starts with '-'$/);
  assert.match(reason(".."), /is a dot name$/);
  assert.match(reason("bad name"), /contains whitespace or control characters$/);
  assert.match(reason("a\tb"), /contains whitespace or control characters$/);
  assert.match(reason("é".repeat(64)), /longer than 127 bytes$/);
});
