import assert from "node:assert/strict";
import { Metrics } from "./metrics.ts";
import { METRICS_PATH, MetricsEndpointError, serveMetrics } from "./endpoint.ts";
import { METRIC_NAMES } from "./names.ts";
import { parseExposition, valueOf } from "../../testing/prometheus_text.ts";
import { makeStaleSocket } from "../../testing/socket_fixtures.ts";

/** An HTTP/1.1 GET over a unix socket: status line, headers and body. */
async function unixGet(path: string, target: string): Promise<{ status: number; body: string }> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(
      new TextEncoder().encode(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
    );
    const text = new TextDecoder().decode(
      await new Response(conn.readable).arrayBuffer(),
    );
    const [head, ...rest] = text.split("\r\n\r\n");
    let body = rest.join("\r\n\r\n");
    if (/transfer-encoding: chunked/i.test(head)) {
      let out = "";
      let at = 0;
      for (;;) {
        const eol = body.indexOf("\r\n", at);
        const size = parseInt(body.slice(at, eol), 16);
        if (!size) break;
        out += body.slice(eol + 2, eol + 2 + size);
        at = eol + 2 + size + 2;
      }
      body = out;
    }
    return { status: Number(head.split(" ")[1]), body };
  } catch (err) {
    conn.close();
    throw err;
  }
}

function someMetrics(): Metrics {
  const m = new Metrics({ processMetrics: false });
  m.rpcDone("Stat", "OK", 0.001);
  return m;
}

Deno.test("endpoint: GET /metrics over TCP in the text format; other paths 404, other methods 405", async () => {
  const endpoint = await serveMetrics({ address: "127.0.0.1:0", metrics: someMetrics() });
  try {
    assert.equal(endpoint.address.transport, "tcp");
    const port = endpoint.address.transport === "tcp" ? endpoint.address.port : 0;
    assert.ok(port > 0);
    const base = `http://127.0.0.1:${port}`;
    const res = await fetch(`${base}${METRICS_PATH}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const e = parseExposition(await res.text());
    assert.equal(valueOf(e, METRIC_NAMES.rpcs, { method: "Stat", code: "OK" }), 1);
    const head = await fetch(`${base}${METRICS_PATH}`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
    const other = await fetch(`${base}/`);
    assert.equal(other.status, 404);
    assert.match(await other.text(), /metrics are at \/metrics/);
    const post = await fetch(`${base}${METRICS_PATH}`, { method: "POST", body: "x" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    await post.body?.cancel();
  } finally {
    await endpoint.close();
  }
});

Deno.test("endpoint: on a unix socket, replacing a stale one, refusing a live one, removed at close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-metrics-" });
  const path = `${dir}/metrics.sock`;
  try {
    await makeStaleSocket(path); // left by a process that is gone
    assert.ok((await Deno.lstat(path)).isSocket);
    const endpoint = await serveMetrics({ address: `unix:${path}`, metrics: someMetrics() });
    assert.deepEqual(endpoint.address, { transport: "unix", path });
    const { status, body } = await unixGet(path, METRICS_PATH);
    assert.equal(status, 200);
    assert.equal(
      valueOf(parseExposition(body), METRIC_NAMES.rpcs, { method: "Stat", code: "OK" }),
      1,
    );
    await assert.rejects(
      serveMetrics({ address: `unix:${path}`, metrics: someMetrics() }),
      (err: Error) => {
        assert.ok(err instanceof MetricsEndpointError);
        assert.match(err.message, /^Cannot serve metrics on unix:.*another process serves/);
        return true;
      },
    );
    await endpoint.close();
    await endpoint.close(); // idempotent
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("endpoint: a taken TCP port is a clear error", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    await assert.rejects(
      serveMetrics({ address: `127.0.0.1:${port}`, metrics: someMetrics() }),
      new RegExp(`^MetricsEndpointError: Cannot serve metrics on 127\\.0\\.0\\.1:${port}: `),
    );
  } finally {
    taken.close();
  }
});

Deno.test("endpoint: a scrape that fails is a 500 with the reason; the endpoint stays up", async () => {
  const metrics = someMetrics();
  let fail = true;
  const text = metrics.text.bind(metrics);
  metrics.text = () => fail ? Promise.reject(new Error("boom")) : text();
  const endpoint = await serveMetrics({ address: "127.0.0.1:0", metrics });
  try {
    const port = endpoint.address.transport === "tcp" ? endpoint.address.port : 0;
    const bad = await fetch(`http://127.0.0.1:${port}${METRICS_PATH}`);
    assert.equal(bad.status, 500);
    assert.equal(await bad.text(), "Cannot collect metrics: boom\n");
    fail = false;
    const good = await fetch(`http://127.0.0.1:${port}${METRICS_PATH}`);
    assert.equal(good.status, 200);
    await good.body?.cancel();
  } finally {
    await endpoint.close();
  }
});
