/**
 * Unix-socket fixtures for server tests: a stale socket file (its listener was killed) and a
 * live listener in this process.
 *
 * @module
 */

/** Leaves a socket file at `path` with nothing listening: a child process binds it, then is
 * SIGKILLed so it cannot unlink it. */
export async function makeStaleSocket(path: string): Promise<void> {
  const code = `Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} });` +
    `console.log("ready"); setTimeout(() => {}, 600000);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  child.kill("SIGKILL");
  await child.status;
  await child.stdout.cancel();
  if (!new TextDecoder().decode(value).includes("ready")) {
    throw new Error(`Cannot make stale socket "${path}": child did not start`);
  }
  if (!(await Deno.lstat(path)).isSocket) throw new Error(`Cannot make stale socket "${path}"`);
}
