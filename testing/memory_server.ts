/**
 * Runs `serve` (the real CLI path: flags, config, signals, graceful shutdown) with the in-memory
 * test double instead of the devmapper snapshotter, pre-populated for the stress client:
 * one committed snapshot `base` and `--items` active children `a0..a<n-1>`. Calls on keys
 * starting with `slow-` take 30 ms (for mid-call cancellation).
 * Prints `listening <socket>` on stdout once the socket accepts calls.
 *
 * Usage: deno run -A tests/stress/memory_server.ts --address SOCK [--items 150] [--log-level warn]
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
  openSnapshotter: async () => {
    // keys starting with "slow-" take 30 ms, so a client can cancel them mid-call
    const s = memorySnapshotter({
      gate: (_method, key) =>
        key.startsWith("slow-") ? new Promise((r) => setTimeout(r, 30)) : Promise.resolve(),
    });
    await s.prepare("base-active", "");
    await s.commit("base", "base-active");
    for (let i = 0; i < Number(values.items); i++) await s.prepare(`a${i}`, "base");
    return s;
  },
  onListening: (server) => console.log(`listening ${server.socketPath}`),
});
await Deno.remove(root, { recursive: true });
Deno.exit(code);
