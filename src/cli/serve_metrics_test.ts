/**
 * `serve` with `metrics_address`: the real snapshotter (on the in-memory device mapper) served
 * over both gRPC transports, its endpoint scraped, and the exposition checked by
 * `promtool check metrics` (Debian's `prometheus` package; the test says so and is skipped
 * when promtool is not installed).
 */
import assert from "node:assert/strict";
import { serve } from "./serve.ts";
import { openMeasuredSnapshotter } from "./snapshotter_factory.ts";
import type { Config, GrpcTransport } from "../config/config.ts";
import { silentLogger } from "../util/log.ts";
import { METRIC_NAMES as N } from "../metrics/names.ts";
import type { MetricsEndpoint } from "../metrics/endpoint.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { defaultConfig } from "../../testing/config_fixtures.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";
import { connectSnapshots } from "../../testing/snapshots_client.ts";
import { parseExposition, samplesOf, valueOf } from "../../testing/prometheus_text.ts";
import denoJson from "../../deno.json" with { type: "json" };

const POOL = "metrics-pool";
const BLOCK_BYTES = 128 * 512;

/** Where promtool is, or undefined. */
function findPromtool(): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/promtool`).isFile) return `${dir}/promtool`;
    } catch {
      // not here
    }
  }
  return undefined;
}

const PROMTOOL = findPromtool();

interface Scraped {
  text: string;
  /** What the factory got (undefined: metrics off). */
  metrics: Metrics | undefined;
  endpoint: MetricsEndpoint | undefined;
}

/**
 * Serves a memory-backed snapshotter with `config` changes, runs `work` against it, scrapes
 * (when metrics are on) and stops.
 */
async function serveAndScrape(
  changes: Partial<Config>,
  work: (socket: string) => Promise<void>,
): Promise<Scraped> {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-serve-metrics-" });
  try {
    const dm = new MemoryDeviceMapper();
    dm.createPool(POOL, { dataBlocks: 4096 });
    const config: Config = {
      ...defaultConfig(POOL),
      rootPath: `${dir}/root`,
      address: `${dir}/s.sock`,
      ...changes,
    };
    const stop = new AbortController();
    const result: Scraped = { text: "", metrics: undefined, endpoint: undefined };
    let done: Promise<void> = Promise.resolve();
    await serve({
      config,
      logger: silentLogger(),
      signals: [],
      stop: stop.signal,
      notify: () => {},
      openSnapshotter: (c, _logger, metrics) => {
        result.metrics = metrics;
        return openMeasuredSnapshotter(
          memorySnapshotterOptions({ rootPath: c.rootPath, poolName: c.poolName, dm }),
          { metrics, backend: "memory" },
        );
      },
      onMetricsListening: (endpoint) => (result.endpoint = endpoint),
      onListening: () => {
        done = (async () => {
          try {
            await work(config.address);
            const address = result.endpoint?.address;
            if (address?.transport === "tcp") {
              const res = await fetch(`http://${address.hostname}:${address.port}/metrics`);
              assert.equal(res.status, 200);
              result.text = await res.text();
            }
          } finally {
            stop.abort();
          }
        })();
      },
    });
    await done;
    return result;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A few calls of every outcome: created, committed, viewed, removed, a missing key. */
async function someCalls(socket: string): Promise<void> {
  const client = connectSnapshots(socket);
  try {
    await client.prepare("a");
    await client.commit("c", "a");
    await client.view("v", "c");
    await client.prepare("b", "c");
    await client.usage("b");
    await client.remove("v");
    await assert.rejects(client.stat("missing"));
    await client.list();
  } finally {
    client.close();
  }
}

for (const transport of ["native", "grpc-js"] as GrpcTransport[]) {
  Deno.test(`serve with metrics_address (${transport}): RPCs, dm operations, pool, database and build in /metrics`, async () => {
    const { text, metrics, endpoint } = await serveAndScrape(
      { metricsAddress: "127.0.0.1:0", grpcTransport: transport },
      someCalls,
    );
    assert.ok(metrics && endpoint, "metrics on");
    // closed with the server
    const address = endpoint.address;
    assert.equal(address.transport, "tcp");
    await assert.rejects(
      Deno.connect({ hostname: "127.0.0.1", port: address.transport === "tcp" ? address.port : 0 }),
      Deno.errors.ConnectionRefused,
    );
    const e = parseExposition(text);
    // every call, counted once at the service boundary, whatever the transport
    for (const method of ["Prepare", "Commit", "View", "Usage", "Remove", "List"]) {
      const expected = method === "Prepare" ? 2 : 1;
      assert.equal(valueOf(e, N.rpcs, { method, code: "OK" }), expected, method);
      assert.equal(valueOf(e, `${N.rpcDuration}_count`, { method, code: "OK" }), expected);
    }
    assert.equal(valueOf(e, N.rpcs, { method: "Stat", code: "NOT_FOUND" }), 1);
    // device-mapper operations through the decorator, with the backend's name
    assert.ok(valueOf(e, N.dmOperations, { operation: "createThin", backend: "memory" }) >= 1);
    assert.ok(valueOf(e, N.dmOperations, { operation: "createSnap", backend: "memory" }) >= 2);
    assert.ok(valueOf(e, N.dmOperations, { operation: "statusAll", backend: "memory" }) >= 1);
    // the pool, from the last status read
    assert.equal(valueOf(e, N.poolDataSize), 4096 * BLOCK_BYTES);
    assert.equal(valueOf(e, N.poolMetadataSize), 1024 * 4096);
    assert.equal(valueOf(e, N.poolMode, { mode: "read_write" }), 1);
    assert.ok(valueOf(e, N.poolStatusTime) <= Date.now() / 1000);
    // the database, counted at the scrape
    assert.equal(valueOf(e, N.snapshots, { kind: "active" }), 1);
    assert.equal(valueOf(e, N.snapshots, { kind: "committed" }), 1);
    assert.equal(valueOf(e, N.snapshots, { kind: "view" }), 0);
    assert.equal(valueOf(e, N.templateDevices), 1);
    // the template, "a" (then "c") and "b"; a view may have a device of its own
    assert.ok(valueOf(e, N.thinIdsAllocated) >= 3);
    assert.ok(valueOf(e, N.thinDevices, { state: "ready" }) >= 3);
    assert.equal(valueOf(e, N.reconciled, { action: "deleted" }), 0);
    assert.deepEqual(samplesOf(e, N.buildInfo)[0].labels, {
      version: denoJson.version,
      deno_version: Deno.version.deno,
      dm_backend: "memory",
      transport,
    });
    for (const name of [N.processResidentMemory, N.processCpu, N.processOpenFds]) {
      assert.ok(valueOf(e, name) > 0, name);
    }
    assert.ok(valueOf(e, N.processStartTime) > 1.6e9);
  });
}

Deno.test("serve: a metrics port taken fails the start before the pool is opened", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    let opened = false;
    await assert.rejects(
      serve({
        config: {
          ...defaultConfig(POOL),
          address: `${Deno.makeTempDirSync()}/s.sock`,
          metricsAddress: `127.0.0.1:${port}`,
        },
        logger: silentLogger(),
        signals: [],
        notify: () => {},
        openSnapshotter: () => {
          opened = true;
          throw new Error("not reached");
        },
      }),
      new RegExp(`Cannot serve metrics on 127\\.0\\.0\\.1:${port}: `),
    );
    assert.equal(opened, false);
  } finally {
    taken.close();
  }
});

Deno.test("serve without metrics_address (the default): no endpoint, no metrics recorded", async () => {
  const { metrics, endpoint } = await serveAndScrape({}, someCalls);
  assert.equal(metrics, undefined);
  assert.equal(endpoint, undefined);
});

Deno.test({
  name: PROMTOOL
    ? "promtool check metrics accepts the endpoint's output with no lint problem"
    : "promtool check metrics (SKIPPED: promtool not found; install Debian's prometheus package)",
  ignore: PROMTOOL === undefined,
  async fn() {
    const { text } = await serveAndScrape({ metricsAddress: "127.0.0.1:0" }, someCalls);
    assert.ok(text.includes(N.rpcs));
    const child = new Deno.Command(PROMTOOL!, {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(text));
    await writer.close();
    const out = await child.output();
    const said = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `promtool check metrics:\n${said}`);
    assert.equal(said.trim(), "", `promtool check metrics:\n${said}`);
  },
});
