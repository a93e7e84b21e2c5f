import assert from "node:assert/strict";
import { configFixtures } from "../../testing/config_fixtures.ts";

const { resolveFile, problems } = configFixtures();

Deno.test("metrics_address: off by default; HOST:PORT and unix:PATH accepted", () => {
  assert.equal(resolveFile({ pool_name: "p" }).metricsAddress, "");
  assert.equal(resolveFile({ pool_name: "p", metrics_address: "" }).metricsAddress, "");
  const address = (v: string) => resolveFile({ pool_name: "p", metrics_address: v }).metricsAddress;
  assert.equal(address("127.0.0.1:9477"), "127.0.0.1:9477");
  assert.equal(address("localhost:0"), "localhost:0");
  assert.equal(address(":9477"), ":9477");
  assert.equal(address("[::1]:9477"), "[::1]:9477");
  assert.equal(address("unix:/run/m.sock"), "unix:/run/m.sock");
  assert.equal(address("unix:///run/m.sock"), "unix:/run/m.sock");
  // a flag's relative path resolves against the working directory
  assert.equal(
    resolveFile({ pool_name: "p" }, { metrics_address: "unix:m.sock" }).metricsAddress,
    `unix:${Deno.cwd()}/m.sock`,
  );
});

Deno.test("metrics_address: a clear problem for anything else", () => {
  const problem = (v: unknown) => {
    const found = problems({ pool_name: "p", metrics_address: v });
    assert.equal(found.length, 1, JSON.stringify(found));
    assert.equal(found[0].key, "metrics_address");
    return found[0].message;
  };
  assert.match(problem("9477"), /"9477": no port \(use HOST:PORT or unix:PATH\)/);
  assert.match(problem("http://x:1"), /not a host and port/);
  assert.match(problem("x:70000"), /port 70000 is above 65535/);
  assert.match(problem("x:"), /not a host and port/);
  assert.match(problem("unix:"), /empty socket path/);
  assert.match(problem("unix:rel.sock"), /absolute path/);
  assert.match(problem("unix:/" + "x".repeat(200)), /the limit is 107/);
  assert.match(problem(9477), /must be a string, not number/);
  const [flag] = problems({ pool_name: "p" }, { metrics_address: "nope" });
  assert.equal(flag.key, "--metrics-address");
});
