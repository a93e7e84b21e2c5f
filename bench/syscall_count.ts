/**
 * Counts the system calls a running process makes while a piece of work runs: `strace -f -c
 * -e trace=<calls> -p <pid>` is attached to every thread of the process first, the work runs,
 * then strace is interrupted and its summary read.
 *
 * Invariants: the work starts only once strace has reported the process attached (with all
 * its threads), and the counts are read only after strace has exited, so every call the work
 * caused is counted. strace stops the traced threads at every system call (not only the
 * counted ones), so the work runs slower while traced: time it separately.
 *
 * @module
 */
import { poll } from "../testing/poll.ts";

/** Calls counted per system call name. */
export type SyscallCounts = Record<string, number>;

/** Raised when strace cannot be started or does not attach. */
export class SyscallCountError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SyscallCountError";
  }
}

/**
 * The calls per system call in the summary `strace -c` writes (the table with `% time`,
 * `seconds`, `usecs/call`, `calls`, `errors` and `syscall` columns; the `total` row is left out).
 */
export function parseStraceSummary(text: string): SyscallCounts {
  const counts: SyscallCounts = {};
  const row = /^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?([a-z_0-9]+)\s*$/;
  for (const line of text.split("\n")) {
    const m = row.exec(line);
    if (m && m[2] !== "total") counts[m[2]] = (counts[m[2]] ?? 0) + Number(m[1]);
  }
  return counts;
}

/** True when strace is on PATH. */
export async function straceAvailable(): Promise<boolean> {
  try {
    const out = await new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" })
      .output();
    return out.success;
  } catch {
    return false;
  }
}

/**
 * Runs `work` while strace counts `syscalls` made by every thread of process `pid`; resolves
 * with the counts (0 for a listed call never made) and what `work` returned.
 */
export async function countSyscalls<T>(
  pid: number,
  syscalls: readonly string[],
  work: () => Promise<T>,
): Promise<{ counts: SyscallCounts; value: T }> {
  const summary = await Deno.makeTempFile({ prefix: "strace-", suffix: ".txt" });
  const child = new Deno.Command("strace", {
    args: ["-f", "-c", "-e", `trace=${syscalls.join(",")}`, "-o", summary, "-p", String(pid)],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  let exited = false;
  const status = child.status.finally(() => exited = true);
  try {
    await poll(() => exited || /attached/.test(stderr), `strace to attach to process ${pid}`, {
      timeoutMs: 30_000,
    });
    if (exited) {
      throw new SyscallCountError(`Cannot trace process ${pid}: strace exited: ${stderr.trim()}`);
    }
    const value = await work();
    child.kill("SIGINT");
    await status;
    await reading;
    const counts = parseStraceSummary(await Deno.readTextFile(summary));
    for (const name of syscalls) counts[name] ??= 0;
    return { counts, value };
  } finally {
    if (!exited) child.kill("SIGKILL");
    await status;
    await Deno.remove(summary).catch(() => {});
  }
}
