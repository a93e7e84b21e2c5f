import assert from "node:assert/strict";
import { cString, dlopenLibc, errnoOf, O_RDWR_CLOEXEC, openLibc, strerrorOf } from "./libc.ts";

const ENOENT = 2;

Deno.test("libc: dlopenLibc binds only the functions named", () => {
  const lib = dlopenLibc(["clock_gettime"]);
  try {
    assert.deepEqual(Object.keys(lib.symbols), ["clock_gettime"]);
    const spec = new BigInt64Array(2);
    assert.equal(lib.symbols.clock_gettime(0, spec), 0);
    assert.ok(Math.abs(Number(spec[0]) - Date.now() / 1000) < 5);
  } finally {
    lib.close();
  }
});

Deno.test("libc: errno and strerror of a failed call, read on this thread", () => {
  const lib = dlopenLibc(["open", "strerror", "__errno_location"]);
  try {
    const fd = lib.symbols.open(cString("/nonexistent/libc-test"), O_RDWR_CLOEXEC, 0);
    assert.equal(fd, -1);
    const errno = errnoOf(lib.symbols);
    assert.equal(errno, ENOENT);
    assert.equal(strerrorOf(lib.symbols, errno), "No such file or directory");
  } finally {
    lib.close();
  }
});

Deno.test("libc: openLibc returns each call's value and errno; a missing library throws", () => {
  using libc = openLibc();
  assert.deepEqual(libc.open("/nonexistent/libc-test", O_RDWR_CLOEXEC), {
    value: -1,
    errno: ENOENT,
  });
  const fd = libc.open("/dev/null", O_RDWR_CLOEXEC);
  assert.ok(fd.value >= 0 && fd.errno === 0, JSON.stringify(fd));
  assert.deepEqual(libc.close(fd.value), { value: 0, errno: 0 });
  libc.unload();
  libc.unload(); // idempotent
  assert.throws(() => openLibc("libdoes-not-exist.so.42"));
  assert.throws(() => dlopenLibc(["close"], "libdoes-not-exist.so.42"));
});
