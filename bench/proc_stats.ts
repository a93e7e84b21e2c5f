/**
 * Readings of one process from `/proc/<pid>`: resident memory (`status` VmRSS), CPU time
 * (`stat` utime, stime and the reaped children's cutime, cstime) and I/O counters (`io`).
 *
 * The parsers are pure and take the file's text; the readers only add the file read. CPU times
 * are kept in clock ticks as the kernel reports them (USER_HZ, 100 per second on Linux) and
 * turned into milliseconds with {@linkcode ticksToMs}: one reading is only as fine as a tick
 * (10 ms), so per-operation figures are sums over many operations divided by their count.
 *
 * @module
 */

/** CPU time of a process, in clock ticks. */
export interface CpuTicks {
  /** utime + stime of the process (all its threads, live and exited). */
  self: number;
  /** cutime + cstime: CPU time of children the process has waited for. */
  children: number;
}

/** Clock ticks per second (USER_HZ): 100 on every Linux architecture this runs on. */
export const TICKS_PER_SECOND = 100;

/** Milliseconds of `ticks` clock ticks. */
export function ticksToMs(ticks: number): number {
  return ticks * 1000 / TICKS_PER_SECOND;
}

/** The CPU times in the text of `/proc/<pid>/stat`. */
export function parseCpuTicks(statText: string): CpuTicks {
  // The command name (field 2) is in parentheses and may hold spaces: count from its end.
  const close = statText.lastIndexOf(")");
  if (close < 0) throw new Error(`Cannot parse /proc/<pid>/stat: no ")" in ${statText}`);
  const fields = statText.slice(close + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
  const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number);
  if (![utime, stime, cutime, cstime].every(Number.isFinite)) {
    throw new Error(`Cannot parse /proc/<pid>/stat: no CPU times in ${statText}`);
  }
  return { self: utime + stime, children: cutime + cstime };
}

/** The VmRSS (KiB) in the text of `/proc/<pid>/status`. */
export function parseVmRssKib(statusText: string): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(statusText);
  if (!m) throw new Error("Cannot parse /proc/<pid>/status: no VmRSS line");
  return Number(m[1]);
}

/** The counters in the text of `/proc/<pid>/io` (`rchar`, `syscw`, `write_bytes`, …). */
export function parseProcIo(ioText: string): Record<string, number> {
  const counters: Record<string, number> = {};
  for (const m of ioText.matchAll(/^(\w+):\s+(\d+)$/gm)) counters[m[1]] = Number(m[2]);
  return counters;
}

/** CPU times of process `pid`. */
export async function readCpuTicks(pid: number): Promise<CpuTicks> {
  return parseCpuTicks(await Deno.readTextFile(`/proc/${pid}/stat`));
}

/** Resident set size of process `pid` in KiB. */
export async function readRssKib(pid: number): Promise<number> {
  return parseVmRssKib(await Deno.readTextFile(`/proc/${pid}/status`));
}

/** I/O counters of process `pid`. */
export async function readProcIo(pid: number): Promise<Record<string, number>> {
  return parseProcIo(await Deno.readTextFile(`/proc/${pid}/io`));
}
