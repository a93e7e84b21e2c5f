/**
 * Measures what one process spawn costs in the test kernel: `dmsetup version` started from
 * this Deno process the way our server's command runner starts commands (Deno.Command with
 * piped stdout and stderr), and the same command started by `sh` in a loop.
 *
 * @module
 */
import { median } from "./stats.ts";

/** Spawn-cost figures (ms per spawn). */
export interface SpawnProbe {
  n: number;
  /** Median wall time of one spawn from Deno. */
  denoMs: number;
  /** Average wall time of one spawn from `sh` (loop time minus an empty `sh`'s, ÷ n). */
  shMs: number;
}

async function sh(script: string): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command("sh", { args: ["-c", script], stdout: "null" }).output();
  if (!out.success) {
    throw new Error(`sh -c '${script}' failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return performance.now() - t0;
}

/** Times `n` spawns of `dmsetup version` from Deno and `n` from `sh`. */
export async function spawnProbe(n: number): Promise<SpawnProbe> {
  const deno: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const out = await new Deno.Command("dmsetup", {
      args: ["version"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) throw new Error("dmsetup version failed");
    deno.push(performance.now() - t0);
  }
  const empty = median([await sh("true"), await sh("true"), await sh("true")]);
  const loop = await sh(`i=0; while [ $i -lt ${n} ]; do dmsetup version; i=$((i+1)); done`);
  return { n, denoMs: median(deno), shMs: (loop - empty) / n };
}
