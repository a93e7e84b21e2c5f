/**
 * Our snapshotter's metrics as an operator sees them: a real Prometheus server (Debian's
 * `prometheus` package) scrapes the running server's `--metrics-address` every second, the
 * target is up, and the pool's used data bytes, queried through Prometheus's HTTP API, grow
 * after a container (`ctr run` on our snapshotter) writes into its root filesystem, without
 * any call to the snapshotter in between.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { requireKernel } from "../kernel/fixtures.ts";
import { PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { buildTestImage } from "./image.ts";
import { requireServerEntryPoint, serveArgs } from "./snapshotter_server.ts";
import { spawnDaemon } from "./daemon.ts";
import { poll } from "../../testing/poll.ts";
import { METRIC_NAMES } from "../../src/metrics/names.ts";

/** Where the snapshotter serves its metrics inside the test kernel. */
const METRICS_PORT = 19477;
/** Where Prometheus serves its API inside the test kernel. */
const PROMETHEUS_PORT = 19090;
const JOB = "devmapper-snapshotter";
const MiB = 1024 * 1024;

/** Path of `name` on PATH, or a clear failure (CI installs Debian's prometheus package). */
function executable(name: string): string {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(join(dir, name)).isFile) return join(dir, name);
    } catch {
      // not here
    }
  }
  throw new Error(`${name} not found: install Debian's prometheus package (tools/setup.sh)`);
}

/** One instant query through Prometheus's HTTP API: the first sample's value, if any. */
async function query(expr: string): Promise<number | undefined> {
  const url = `http://127.0.0.1:${PROMETHEUS_PORT}/api/v1/query?query=${encodeURIComponent(expr)}`;
  let res: Response;
  try {
    res = await fetch(url);
  } catch {
    return undefined; // not listening yet
  }
  if (res.status === 503) {
    await res.body?.cancel();
    return undefined; // listening, not ready yet (its storage is still starting)
  }
  const body = await res.json();
  if (res.status !== 200 || body.status !== "success") {
    throw new Error(`Prometheus refused ${expr}: ${JSON.stringify(body)}`);
  }
  const result = body.data.result as { value: [number, string] }[];
  return result.length > 0 ? Number(result[0].value[1]) : undefined;
}

Deno.test("e2e metrics: Prometheus scrapes our snapshotter (up == 1) and sees the pool's used bytes grow when a container writes", async () => {
  requireKernel();
  await requireServerEntryPoint();
  const prometheus = executable("prometheus");
  const imageDir = await Deno.makeTempDir({ prefix: "e2e-image-" });
  try {
    const image = await buildTestImage({ dir: imageDir });
    await using env = await startE2eEnv({
      proxy: true,
      serverCommand: (config, socket) => [
        Deno.execPath(),
        ...serveArgs(config, socket),
        "--metrics-address",
        `127.0.0.1:${METRICS_PORT}`,
      ],
    });
    const dir = join(env.dir, "prometheus");
    await Deno.mkdir(dir);
    await Deno.writeTextFile(
      join(dir, "prometheus.yml"),
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "  evaluation_interval: 1s",
        "scrape_configs:",
        `  - job_name: ${JOB}`,
        "    static_configs:",
        `      - targets: ["127.0.0.1:${METRICS_PORT}"]`,
        "",
      ].join("\n"),
    );
    const logPath = join(dir, "prometheus.log");
    const server = await spawnDaemon(prometheus, {
      args: [
        `--config.file=${join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${PROMETHEUS_PORT}`,
      ],
      logPath,
    });
    const detail = async () =>
      `prometheus log:\n${(await Deno.readTextFile(logPath)).slice(-3000)}\nserver log:\n${await env
        .server!.logTail(2000)}`;
    try {
      const up = await poll(
        async () => (await query(`up{job="${JOB}"}`)) === 1,
        "Prometheus to scrape the snapshotter (up == 1)",
        { timeoutMs: 90_000, intervalMs: 500, detail },
      );
      assert.equal(up, true);

      const usedQuery = `${METRIC_NAMES.poolDataUsed}{job="${JOB}"}`;
      await env.ctd.ctr(["images", "import", "--snapshotter", PROXY_SNAPSHOTTER, image.archive]);
      // the layers are in the pool now (the image's 12 MiB file among them): what a container
      // adds is measured from there. The last call (the import's Commit) read no status after
      // the data was written: the figures catch up on their own, as they would on an idle node
      const before = await poll(
        async () => {
          const used = await query(usedQuery);
          return used !== undefined && used >= image.bigFileBytes ? used : 0;
        },
        `the pool's used bytes to show the imported layers (${image.bigFileBytes} bytes and more)`,
        { timeoutMs: 30_000, intervalMs: 500, detail },
      );
      const size = await query(`${METRIC_NAMES.poolDataSize}{job="${JOB}"}`);
      assert.equal(size, 256 * MiB, "the pool's data device, as the test pool made it");

      // a container copies the image's 12 MiB pseudo-random file in its root filesystem and
      // exits; its snapshot (and the data) stays until the container is deleted
      await env.ctd.ctr([
        "run",
        "--snapshotter",
        PROXY_SNAPSHOTTER,
        image.ref,
        "metrics-writer",
        "/bin/sh",
        "-c",
        "cat /dmsnap/big.bin > /copy.bin && sync",
      ]);
      const after = await poll(
        async () => {
          const used = await query(usedQuery);
          return used !== undefined && used >= before + 0.9 * image.bigFileBytes ? used : 0;
        },
        `the pool's used bytes (${before} before) to grow by the ${image.bigFileBytes} bytes ` +
          "the container wrote",
        { timeoutMs: 60_000, intervalMs: 500, detail },
      );
      console.log(JSON.stringify({ poolDataUsedBefore: before, poolDataUsedAfter: after }));

      // the calls containerd made are counted by method and code
      const prepares = await query(
        `sum(${METRIC_NAMES.rpcs}{job="${JOB}",method="Prepare",code="OK"})`,
      );
      assert.ok((prepares ?? 0) >= 2, `Prepare calls counted: ${prepares}`);
      const build = await query(`${METRIC_NAMES.buildInfo}{job="${JOB}",transport="native"}`);
      assert.equal(build, 1);
      await env.ctd.ctr(["containers", "rm", "metrics-writer"]);
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(imageDir, { recursive: true });
  }
});
