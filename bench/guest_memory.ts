/**
 * Touches most of the test kernel's memory once, so that what a benchmark measures later does
 * not pay for it. User-mode Linux keeps the guest's physical memory in a host file that the
 * host fills on first touch: until a guest page has been used once, every allocation that
 * lands on it costs a host page fault, and a freshly booted guest runs everything measurably
 * slower (in the scale benchmark, the same Prepare took 2–3× the CPU time early in the run
 * that it took later) until most of its memory has been used.
 *
 * Invariants: the memory is touched by a short-lived process (`dd` reading /dev/zero into one
 * buffer) whose exit gives it all back; `reserveMb` of the guest's available memory stays
 * untouched so the guest never runs short.
 *
 * @module
 */

/** MemAvailable from the text of /proc/meminfo, in MiB. */
export function availableMb(meminfo: string): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(meminfo);
  if (!m) throw new Error("Cannot read /proc/meminfo: no MemAvailable line");
  return Math.floor(Number(m[1]) / 1024);
}

/** Fills a buffer of (available − `reserveMb`) MiB once; resolves with its size in MiB. */
export async function touchGuestMemory(options: { reserveMb?: number } = {}): Promise<number> {
  const mb = availableMb(await Deno.readTextFile("/proc/meminfo")) - (options.reserveMb ?? 384);
  if (mb <= 0) return 0;
  const out = await new Deno.Command("dd", {
    args: ["if=/dev/zero", "of=/dev/null", `bs=${mb}M`, "count=1"],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `Cannot touch ${mb} MiB of guest memory: dd failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return mb;
}
