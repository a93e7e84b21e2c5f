/**
 * `deno task bench:transport`: what one call costs on each gRPC transport of `startServer`:
 * `native` (this project's HTTP/2 stack, the default) and `grpc-js` (`@grpc/grpc-js` over
 * `node:http2`). Runs on the host, no kernel needed.
 *
 * Each transport serves the in-memory snapshotter (`testing/memory_snapshotter.ts`, holding a
 * chain of `--snapshots` committed snapshots) from its own child process, started by this
 * script in `--serve` mode; both run at once. One client process (this one, with the same
 * `@grpc/grpc-js` client for both, `testing/snapshots_client.ts`) makes the calls one at a
 * time: Stat of one snapshot and List of all of them (one stream message), in blocks of
 * `--block` calls that alternate between the transports (which goes first alternates too),
 * so that drift on the host spreads over both. Each operation starts with `--warmup`
 * unmeasured calls per transport.
 *
 * Prints, per operation and transport, the median and p90 wall time per call as the client
 * sees it (client and server together), the server process's CPU time per call (user +
 * system, all threads, from `/proc/<pid>/stat` around each block; resolution one clock tick,
 * so the total over all blocks is what counts), the ratios grpc-js / native, and per
 * transport how long `startServer` took and the server's resident memory at the end.
 *
 * Flags: `--calls <n>` (measured calls per operation and transport, default 4000),
 * `--block <n>` (default 200), `--warmup <n>` (default 500), `--snapshots <n>` (default 100).
 * A script that prints numbers, not a test.
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startServer, type Transport, TRANSPORTS } from "../src/server/server.ts";
import { memorySnapshotter } from "../testing/memory_snapshotter.ts";
// the client (and with it @grpc/grpc-js) is imported only by the parent: see startChild
import type { SnapshotsClient } from "../testing/snapshots_client.ts";
import { fmt, formatColumns, median, percentile } from "./stats.ts";

/** Repository root: the child server runs there, so deno.json's import map applies. */
const REPO_ROOT = new URL("../", import.meta.url).pathname;

/** The snapshot Stat asks for (the middle of the chain). */
function statKey(snapshots: number): string {
  return `layer-${Math.floor(snapshots / 2)}`;
}

/** Fills `snapshotter` with a chain of committed snapshots carrying containerd-like labels. */
async function populate(
  snapshotter: ReturnType<typeof memorySnapshotter>,
  snapshots: number,
): Promise<void> {
  for (let i = 0; i < snapshots; i++) {
    const labels = {
      "containerd.io/snapshot.ref": `sha256:${i.toString(16).padStart(64, "0")}`,
      "containerd.io/snapshot/devmapper/fstype": "ext4",
    };
    await snapshotter.prepare(`active-${i}`, i === 0 ? "" : `layer-${i - 1}`, labels);
    await snapshotter.commit(`layer-${i}`, `active-${i}`, labels);
  }
}

/**
 * Child mode: serves until stdin closes, after printing `ready <ms>` once listening, `ms` being
 * how long `startServer` took (loading `@grpc/grpc-js` included: it is imported on demand).
 */
async function serve(transport: Transport, socket: string, snapshots: number): Promise<void> {
  const snapshotter = memorySnapshotter();
  await populate(snapshotter, snapshots);
  const t0 = performance.now();
  const server = await startServer({ address: socket, snapshotter, transport });
  console.log(`ready ${performance.now() - t0}`);
  for await (const _ of Deno.stdin.readable) {
    // nothing is sent: stdin closing is the signal to stop
  }
  await server.close();
}

/** CPU time (user + system, all threads) of process `pid` so far, in clock ticks. */
async function cpuTicks(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // fields after the command name, which is in parentheses and may contain anything
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime (field 14), stime (field 15)
}

async function clockTicksPerSecond(): Promise<number> {
  try {
    const out = await new Deno.Command("getconf", { args: ["CLK_TCK"] }).output();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    return out.success && n > 0 ? n : 100;
  } catch {
    return 100;
  }
}

async function rssKib(pid: number): Promise<number> {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(await Deno.readTextFile(`/proc/${pid}/status`));
  return m ? Number(m[1]) : NaN;
}

/** A transport served from a child process, and a client connected to it. */
interface Served {
  transport: Transport;
  pid: number;
  client: SnapshotsClient;
  /** How long `startServer` took in the child, ms. */
  startMs: number;
  /** Closes the client, stops the child and waits for it. */
  stop(): Promise<void>;
}

async function startChild(transport: Transport, dir: string, snapshots: number): Promise<Served> {
  const socket = join(dir, `${transport}.sock`);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "--serve",
      transport,
      "--socket",
      socket,
      "--snapshots",
      String(snapshots),
    ],
    cwd: REPO_ROOT,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const stdin = child.stdin.getWriter();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let ready: RegExpExecArray | null = null;
  while (!(ready = /^ready (\S+)\n/m.exec(seen))) {
    const { value, done } = await reader.read();
    if (done) {
      const status = await child.status;
      throw new Error(`Cannot start the ${transport} server: it exited with ${status.code}`);
    }
    seen += value;
  }
  await reader.cancel();
  // imported here, not statically, so that a native server never loads @grpc/grpc-js
  const { connectSnapshots } = await import("../testing/snapshots_client.ts");
  const client = connectSnapshots(socket);
  return {
    transport,
    pid: child.pid,
    client,
    startMs: Number(ready[1]),
    async stop() {
      client.close();
      await stdin.close();
      const status = await child.status;
      if (!status.success) throw new Error(`The ${transport} server exited with ${status.code}`);
    },
  };
}

/** Samples of one operation on one transport. */
interface Samples {
  /** Wall time per call, µs. */
  us: number[];
  /** Server CPU over all measured calls, clock ticks. */
  cpuTicks: number;
}

type Op = (client: SnapshotsClient) => Promise<void>;

async function measure(
  servers: readonly Served[],
  op: Op,
  o: { calls: number; block: number; warmup: number },
): Promise<Map<Transport, Samples>> {
  const out = new Map<Transport, Samples>();
  for (const s of servers) {
    out.set(s.transport, { us: [], cpuTicks: 0 });
    for (let i = 0; i < o.warmup; i++) await op(s.client);
  }
  const blocks = Math.ceil(o.calls / o.block);
  for (let b = 0; b < blocks; b++) {
    const order = b % 2 === 0 ? servers : [...servers].reverse();
    const n = Math.min(o.block, o.calls - b * o.block);
    for (const s of order) {
      const samples = out.get(s.transport)!;
      const cpu0 = await cpuTicks(s.pid);
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await op(s.client);
        samples.us.push((performance.now() - t0) * 1000);
      }
      samples.cpuTicks += (await cpuTicks(s.pid)) - cpu0;
    }
  }
  return out;
}

async function hostLine(): Promise<string> {
  let cpu = "unknown CPU";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(await Deno.readTextFile("/proc/cpuinfo"));
    if (m) cpu = m[1];
  } catch {
    // not Linux-like: leave it unknown
  }
  return `host: ${cpu}, ${navigator.hardwareConcurrency} CPUs, deno ${Deno.version.deno}`;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      calls: { type: "string", default: "4000" },
      block: { type: "string", default: "200" },
      warmup: { type: "string", default: "500" },
      snapshots: { type: "string", default: "100" },
      serve: { type: "string" },
      socket: { type: "string" },
    },
  });
  const count = (flag: "calls" | "block" | "warmup" | "snapshots", min: number): number => {
    const n = Number(values[flag]);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new Error(`Cannot run: --${flag} must be an integer of at least ${min}`);
    }
    return n;
  };
  const snapshots = count("snapshots", 1);
  if (values.serve !== undefined) {
    if (!(TRANSPORTS as readonly string[]).includes(values.serve) || !values.socket) {
      throw new Error(`Cannot serve: bad --serve "${values.serve}" or missing --socket`);
    }
    return await serve(values.serve as Transport, values.socket, snapshots);
  }
  const o = { calls: count("calls", 1), block: count("block", 1), warmup: count("warmup", 0) };
  const tick = await clockTicksPerSecond();
  const dir = await Deno.makeTempDir({ prefix: "bench-transport-" });
  const servers: Served[] = [];
  try {
    for (const t of TRANSPORTS) servers.push(await startChild(t, dir, snapshots));
    const key = statKey(snapshots);
    const ops: [string, Op][] = [
      ["Stat", async (c) => {
        if ((await c.stat(key)).name !== key) throw new Error("Stat returned another snapshot");
      }],
      [`List (${snapshots})`, async (c) => {
        const { infos } = await c.list();
        if (infos.length !== snapshots) throw new Error(`List returned ${infos.length} snapshots`);
      }],
    ];
    console.log(await hostLine());
    console.log(
      `${o.calls} calls per operation and transport, one at a time, in alternating blocks of ` +
        `${o.block}, after ${o.warmup} warm-up calls; one grpc-js client for both servers`,
    );
    const rows = [["operation", "transport", "median µs", "p90 µs", "server CPU µs/call"]];
    const ratios = [["grpc-js / native", "median", "p90", "server CPU"]];
    for (const [name, op] of ops) {
      const results = await measure(servers, op, o);
      const stat = (t: Transport) => {
        const s = results.get(t)!;
        return {
          median: median(s.us),
          p90: percentile(s.us, 90),
          cpu: (s.cpuTicks / tick) * 1e6 / s.us.length,
        };
      };
      for (const t of TRANSPORTS) {
        const s = stat(t);
        rows.push([name, t, fmt(s.median, 0), fmt(s.p90, 0), fmt(s.cpu, 0)]);
      }
      const native = stat("native");
      const grpcJs = stat("grpc-js");
      const x = (a: number, b: number) => `${fmt(a / b, 2)}x`;
      ratios.push([
        name,
        x(grpcJs.median, native.median),
        x(grpcJs.p90, native.p90),
        x(grpcJs.cpu, native.cpu),
      ]);
    }
    console.log("\n" + formatColumns(rows));
    console.log("\n" + formatColumns(ratios));
    const perServer = [["transport", "startServer ms", "RSS at the end, KiB"]];
    for (const s of servers) {
      perServer.push([s.transport, fmt(s.startMs, 0), String(await rssKib(s.pid))]);
    }
    console.log("\n" + formatColumns(perServer));
  } finally {
    for (const s of servers) await s.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
