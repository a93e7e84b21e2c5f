import assert from "node:assert/strict";
import { formatListenAddress, ListenAddressError, parseListenAddress } from "./listen_address.ts";

Deno.test("listen address: HOST:PORT, [v6]:PORT, :PORT and unix:PATH", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:9477"), {
    transport: "tcp",
    hostname: "127.0.0.1",
    port: 9477,
  });
  assert.deepEqual(parseListenAddress("[::1]:0"), { transport: "tcp", hostname: "::1", port: 0 });
  assert.deepEqual(parseListenAddress(":80"), { transport: "tcp", hostname: "0.0.0.0", port: 80 });
  assert.deepEqual(parseListenAddress("unix:/run/m.sock"), {
    transport: "unix",
    path: "/run/m.sock",
  });
  assert.deepEqual(parseListenAddress("unix:///run/m.sock"), {
    transport: "unix",
    path: "/run/m.sock",
  });
  for (const text of ["127.0.0.1:9477", "[::1]:1", "unix:/run/m.sock"]) {
    assert.equal(formatListenAddress(parseListenAddress(text)), text);
  }
});

Deno.test("listen address: anything else is a ListenAddressError saying what to use", () => {
  for (
    const [text, why] of [
      ["9477", /no port/],
      ["host", /no port/],
      ["h:99999", /port 99999 is above 65535/],
      ["tcp://h:1", /not a host and port/],
      ["a b:1", /not a host and port/],
      ["unix:", /empty socket path/],
    ] as const
  ) {
    assert.throws(() => parseListenAddress(text), (err: Error) => {
      assert.ok(err instanceof ListenAddressError);
      assert.match(err.message, why);
      assert.match(err.message, /\(use HOST:PORT or unix:PATH\)$/);
      return true;
    }, text);
  }
});
