/**
 * How a benchmark script runs: inside the test kernel it measures; on the host it boots
 * user-mode Linux, runs itself there (output streamed), and brackets the run with the host's
 * load average, since the guest shares the host's CPUs.
 *
 * @module
 */

/** What {@linkcode benchInKernel} runs. */
export interface BenchInKernel {
  /** This script's path from the repository root, e.g. `bench/run.ts`. */
  script: string;
  /** What is booted for, in the host's log line. */
  what: string;
  /** Limit of the whole kernel run, ms. */
  timeoutMs: number;
  /** The measurement, run inside the kernel. */
  measure: () => Promise<void>;
  /** Run on the host before the boot (e.g. to build what the measurement runs). */
  prepare?: () => Promise<void>;
}

/** Runs `measure` inside the kernel: directly when already there, else by booting it. */
export async function benchInKernel(options: BenchInKernel): Promise<void> {
  if (Deno.env.get("DMSNAP_IN_KERNEL") === "1") return await options.measure();
  await options.prepare?.();
  const { runInKernel } = await import("../tests/uml/launcher.ts");
  const load = async () => (await Deno.readTextFile("/proc/loadavg")).trim();
  console.log(`Host load average before: ${await load()} (${navigator.hardwareConcurrency} CPUs)`);
  console.log(`Booting user-mode Linux for ${options.what}…`);
  const result = await runInKernel({
    command: [Deno.execPath(), "run", "-A", options.script, ...Deno.args],
    stream: true,
    timeoutMs: options.timeoutMs,
  });
  if (result.code < 0) console.error(result.console.slice(-3000));
  console.log(
    `Host load average after: ${await load()} — the guest shares the host's CPUs, so other ` +
      "work on the host (e.g. concurrent kernel tests) adds noise to every figure.",
  );
  Deno.exit(result.code === 0 ? 0 : 1);
}
