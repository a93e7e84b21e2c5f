/**
 * `deno task demo`: boots the test kernel (user-mode Linux with device-mapper) and, inside,
 * creates a thin-pool, starts our snapshotter and containerd, imports an image, runs a
 * container, shows the pool's usage and shuts everything down. The steps live in
 * `demo_guest.ts`; this part runs on the host and streams their progress.
 *
 * `deno task demo --builtin` runs the same steps with containerd's built-in devmapper.
 *
 * @module
 */
import { KernelUnavailableError, runInKernel } from "../uml/launcher.ts";

if (import.meta.main) {
  console.log(
    "Booting user-mode Linux (a real Linux kernel with device-mapper, run as a process)…",
  );
  try {
    const result = await runInKernel({
      command: [Deno.execPath(), "run", "-A", "tests/e2e/demo_guest.ts", ...Deno.args],
      stream: true,
      timeoutMs: 5 * 60_000,
    });
    if (result.code < 0) {
      console.error(result.timedOut ? "demo timed out" : "the kernel stopped unexpectedly");
      console.error(result.console.slice(-3000));
    }
    console.log(`\n(kernel run took ${(result.durationMs / 1000).toFixed(1)} s)`);
    Deno.exit(result.code === 0 ? 0 : 1);
  } catch (err) {
    if (err instanceof KernelUnavailableError) {
      console.error(`Cannot run the demo: ${err.message}`);
      Deno.exit(1);
    }
    throw err;
  }
}
