/**
 * Runs the stress client (testing/stress_client.ts) as a process of its own against a server's
 * socket and reads the JSON summary it prints last. The caller asserts on the result; a
 * summary that cannot be read is `undefined`, and `report` carries everything for a message.
 *
 * @module
 */

/** What the stress client prints as its last line. */
export interface StressSummary {
  calls: number;
  ms: number;
  byCode: Record<string, number>;
  byMethod: Record<string, number>;
  unexpected: string[];
  unexpectedCount: number;
}

/** Options for {@linkcode runStressClient}. */
export interface StressRunOptions {
  /** The server's socket. */
  address: string;
  calls: number;
  concurrency: number;
  /** Active children `a0..a<items-1>` the server holds (the client's default when absent). */
  items?: number;
}

/** The stress client's exit code, output and summary. */
export interface StressRun {
  code: number;
  summary: StressSummary | undefined;
  /** Exit code, stdout and stderr, for assertion messages. */
  report: string;
}

const CLIENT = new URL("./stress_client.ts", import.meta.url).pathname;

/** Runs the stress client to its end. */
export async function runStressClient(options: StressRunOptions): Promise<StressRun> {
  const args = [
    "run",
    "-A",
    "--no-check",
    CLIENT,
    "--address",
    options.address,
    "--calls",
    String(options.calls),
    "--concurrency",
    String(options.concurrency),
  ];
  if (options.items !== undefined) args.push("--items", String(options.items));
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  let summary: StressSummary | undefined;
  try {
    summary = JSON.parse(stdout.trim().split("\n").at(-1) ?? "");
  } catch {
    summary = undefined;
  }
  return { code: out.code, summary, report: `exit code ${out.code}\n${stdout}\n${stderr}` };
}
