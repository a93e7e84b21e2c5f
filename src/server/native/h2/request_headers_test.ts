import assert from "node:assert/strict";
import type { HeaderField } from "./hpack.ts";
import { malformedRequest, malformedTrailers } from "./request_headers.ts";

const GRPC: HeaderField[] = [
  [":method", "POST"],
  [":scheme", "http"],
  [":path", "/containerd.services.snapshots.v1.Snapshots/Stat"],
  [":authority", "localhost"],
  ["content-type", "application/grpc"],
  ["user-agent", "grpc-go/1.51.0"],
  ["te", "trailers"],
  ["grpc-timeout", "9999m"],
  ["containerd-namespace", "default"],
];

Deno.test("request headers: what containerd's Go client and grpc-js send is well-formed", () => {
  assert.equal(malformedRequest(GRPC), undefined);
  assert.equal(malformedRequest([[":method", "CONNECT"], [":authority", "h:1"]]), undefined);
  assert.equal(malformedRequest([...GRPC, ["content-length", "12"]]), undefined);
  assert.equal(malformedRequest([...GRPC, ["x-empty", ""], ["x-tab", "a\tb"]]), undefined);
});

Deno.test("request headers: each broken rule is named", () => {
  const without = (name: string) => GRPC.filter(([n]) => n !== name);
  const cases: [HeaderField[], RegExp][] = [
    [[...GRPC, ["Content-Type", "x"]], /invalid field name "Content-Type"/],
    [[...GRPC, ["x y", "1"]], /invalid field name/],
    [[...GRPC, ["x:y", "1"]], /invalid field name/],
    [[...GRPC, ["", "1"]], /invalid field name/],
    [[...GRPC, ["x-\u00e9", "1"]], /invalid field name/],
    [[...GRPC, ["x", "a\rb"]], /invalid value of field "x"/],
    [[...GRPC, ["x", "a\0b"]], /invalid value/],
    [[...GRPC, [":", "1"]], /invalid field name ":"/],
    [[...GRPC, [":status", "200"]], /pseudo-header ":status" in a request/],
    [[...GRPC, [":path", "/again"]], /after a regular field/],
    [[[":path", "/a"], ...GRPC.slice(0, 4)], /":path" repeated/],
    [without(":method"), /no ":method"/],
    [without(":scheme"), /no ":scheme"/],
    [without(":path"), /no ":path"/],
    [[...without(":path"), [":path", ""]], /after a regular field/],
    [[[":method", "GET"], [":scheme", "http"], [":path", ""]], /no ":path"/],
    [[[":method", "CONNECT"]], /CONNECT without ":authority"/],
    [[[":method", "CONNECT"], [":authority", "h"], [":path", "/"]], /CONNECT with/],
    [[...GRPC, ["connection", "close"]], /connection-specific field "connection"/],
    [[...GRPC, ["transfer-encoding", "chunked"]], /connection-specific/],
    [[...GRPC, ["upgrade", "h2c"]], /connection-specific/],
    [[...without("te"), ["te", "gzip"]], /te "gzip" is not "trailers"/],
    [[...GRPC, ["content-length", "1e3"]], /content-length "1e3" is not a number/],
  ];
  for (const [headers, reason] of cases) {
    assert.match(malformedRequest(headers) ?? "(well-formed)", reason, JSON.stringify(headers));
  }
});

Deno.test("request headers: trailers hold no pseudo-header and follow the field rules", () => {
  assert.equal(malformedTrailers([["x-checksum", "1"]]), undefined);
  assert.equal(malformedTrailers([]), undefined);
  assert.match(malformedTrailers([[":path", "/"]]) ?? "", /pseudo-header ":path" in trailers/);
  assert.match(malformedTrailers([["X", "1"]]) ?? "", /invalid field name "X"/);
  assert.match(malformedTrailers([["connection", "x"]]) ?? "", /connection-specific/);
});
