/**
 * `deno task bench`: boots the test kernel once and, inside, runs the same workload through
 * containerd (`ctr`) on our proxy snapshotter and on containerd's built-in devmapper
 * snapshotter, each on its own fresh thin-pool; prints per-operation medians, the ratio
 * ours/built-in, approximate process creations per operation, and memory use.
 *
 * Flags: `--layers <n>` (chain length and number of views, default 20), `--runs <n>` (image
 * imports and container runs timed, default 3), `--only builtin|ours`.
 * A script that prints numbers, not a test.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  BUILTIN_SNAPSHOTTER,
  type E2eEnv,
  PROXY_SNAPSHOTTER,
  startE2eEnv,
} from "../tests/e2e/environment.ts";
import { buildBenchImage, formatTable, runWorkload, type WorkloadResult } from "./workload.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    layers: { type: "string", default: "20" },
    runs: { type: "string", default: "3" },
    only: { type: "string" },
  },
});

async function rssKib(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  const m = /^VmRSS:\s+(\d+) kB/m.exec(await Deno.readTextFile(`/proc/${pid}/status`));
  return m ? Number(m[1]) : NaN;
}

/**
 * containerd 1.6 collects garbage shortly after any deletion (deletion_threshold 0), after
 * 100 other metadata changes, and then periodically every (average collection time ×
 * (1 / pause_threshold − 1)) while deletions are pending. Backend removals would then hide
 * inside whichever `ctr` call happened to run next. These settings push all automatic
 * collections out of the run; the workload collects synchronously where it wants to, so
 * "remove" is containerd's metadata only and "gc" is every backend Remove.
 */
const NO_BACKGROUND_GC = {
  "io.containerd.gc.v1.scheduler": {
    mutation_threshold: 1_000_000,
    deletion_threshold: 1_000_000,
    pause_threshold: 0.000001,
  },
};

async function startEnv(wantOurs: boolean, wantBuiltin: boolean): Promise<E2eEnv> {
  const log = (m: string) => console.log(`  ${m}`);
  const containerdPluginSettings = NO_BACKGROUND_GC;
  if (!wantOurs) return await startE2eEnv({ builtin: true, log, containerdPluginSettings });
  try {
    return await startE2eEnv({
      builtin: wantBuiltin,
      proxy: true,
      log,
      containerdPluginSettings,
    });
  } catch (err) {
    if (!wantBuiltin) throw err;
    console.log(
      `\nOur snapshotter is unavailable; measuring the built-in one only.\n  ${
        (err as Error).message.split("\n").slice(0, 4).join("\n  ")
      }\n`,
    );
    return await startE2eEnv({ builtin: true, log, containerdPluginSettings });
  }
}

async function inKernel(): Promise<void> {
  const layers = Number(values.layers);
  const runs = Number(values.runs);
  const wantOurs = values.only !== "builtin";
  const wantBuiltin = values.only !== "ours";
  const imageDir = await Deno.makeTempDir({ prefix: "bench-image-" });
  const image = await buildBenchImage(imageDir);
  await using env = await startEnv(wantOurs, wantBuiltin);
  const results: Record<string, WorkloadResult | undefined> = {};
  const memory: string[] = [];
  memory.push(`containerd RSS idle: ${await rssKib(env.ctd.pid)} KiB`);
  if (env.server) memory.push(`our server RSS idle: ${await env.server.rssKib()} KiB`);
  const opts = { layers, runs, image, imageDir, log: (m: string) => console.log(`  ${m}`) };
  if (env.server) {
    results.ours = await runWorkload(env.ctd, PROXY_SNAPSHOTTER, opts);
    memory.push(`our server RSS after the workload: ${await env.server.rssKib()} KiB`);
  }
  if (env.builtinPool && wantBuiltin) {
    results.builtin = await runWorkload(env.ctd, BUILTIN_SNAPSHOTTER, opts);
  }
  memory.push(`containerd RSS after the workload(s): ${await rssKib(env.ctd.pid)} KiB`);
  console.log(`\nMedian wall time per operation through ctr (${layers} layers, ${runs} runs):\n`);
  console.log(formatTable(results));
  console.log("\n(forks: kernel process+thread creations per call, minus a `ctr version` call's)");
  console.log(memory.join("\n"));
  await Deno.remove(imageDir, { recursive: true });
}

if (import.meta.main) {
  if (Deno.env.get("DMSNAP_IN_KERNEL") === "1") {
    await inKernel();
  } else {
    const { runInKernel } = await import("../tests/uml/launcher.ts");
    console.log("Booting user-mode Linux for the benchmark…");
    const result = await runInKernel({
      command: [Deno.execPath(), "run", "-A", "bench/run.ts", ...Deno.args],
      stream: true,
      timeoutMs: 20 * 60_000,
    });
    if (result.code < 0) console.error(result.console.slice(-3000));
    Deno.exit(result.code === 0 ? 0 : 1);
  }
}
