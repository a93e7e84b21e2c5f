/**
 * Runs `serve` (the real CLI path: flags, config, signals, graceful shutdown) with the in-memory
 * test double instead of the devmapper snapshotter, pre-populated for the stress client:
 * one committed snapshot `base` and `--items` active children `a0..a<n-1>`, each with a label
 * `x` of `--label-bytes` bytes ("a"s) when that is given. Calls on keys starting with `slow-`
 * take 30 ms (for mid-call cancellation); calls on keys starting with `hang-` never end (for
 * shutdown tests). `--shutdown-timeout-ms` bounds the graceful shutdown (default 10 s).
 * Prints `listening <socket>` on stdout once the socket accepts calls.
 *
 * Usage: deno run -A testing/memory_server.ts --address SOCK [--items 150] [--label-bytes 0]
 *   [--shutdown-timeout-ms 10000] [--log-level warn]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { runCli } from "../src/cli/cli.ts";
import { memorySnapshotter } from "./memory_snapshotter.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    address: { type: "string" },
    items: { type: "string", default: "150" },
    "label-bytes": { type: "string", default: "0" },
    "shutdown-timeout-ms": { type: "string" },
    "log-level": { type: "string", default: "warn" },
  },
});
if (!values.address) throw new Error("Cannot start: --address is required");
const root = await Deno.makeTempDir({ prefix: "dmsnap-memsrv-" });
const code = await runCli([
  "serve",
  "--address",
  values.address,
  "--pool-name",
  "memory",
  "--root-path",
  root,
  "--log-level",
  values["log-level"],
], {
  defaultConfigPath: `${root}/no-config.toml`,
  shutdownTimeoutMs: values["shutdown-timeout-ms"] === undefined
    ? undefined
    : Number(values["shutdown-timeout-ms"]),
  openSnapshotter: async () => {
    // keys starting with "slow-" take 30 ms, so a client can cancel them mid-call; "hang-"
    // ones never end
    const s = memorySnapshotter({
      gate: (_method, key) =>
        key.startsWith("slow-")
          ? new Promise((r) => setTimeout(r, 30))
          : key.startsWith("hang-")
          ? new Promise(() => {})
          : Promise.resolve(),
    });
    await s.prepare("base-active", "");
    await s.commit("base", "base-active");
    const labelBytes = Number(values["label-bytes"]);
    const labels: Record<string, string> = labelBytes > 0 ? { x: "a".repeat(labelBytes) } : {};
    for (let i = 0; i < Number(values.items); i++) await s.prepare(`a${i}`, "base", labels);
    return s;
  },
  onListening: (server) => console.log(`listening ${server.socketPath}`),
});
await Deno.remove(root, { recursive: true });
Deno.exit(code);
