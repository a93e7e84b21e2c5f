import assert from "node:assert/strict";
import { countSyscalls, parseStraceSummary, straceAvailable } from "./syscall_count.ts";

Deno.test("parseStraceSummary reads strace -c's table, with and without errors", () => {
  const text = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 71.43    0.000050          25         2           fsync
 28.57    0.000020          20         1         1 fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    0.000070          23         3         1 total
`;
  assert.deepEqual(parseStraceSummary(text), { fsync: 2, fdatasync: 1 });
  assert.deepEqual(parseStraceSummary("strace: Process 1 detached\n"), {});
});

/** A shell that runs `sync <file>` (one fsync in a child) per line it reads, then answers. */
function syncingShell(file: string) {
  const child = new Deno.Command("sh", {
    args: ["-c", `while read -r _; do sync "${file}"; echo done; done`],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  return {
    pid: child.pid,
    async syncOnce() {
      await writer.write(new TextEncoder().encode("x\n"));
      const { value } = await lines.read();
      assert.equal(value?.trim(), "done");
    },
    async close() {
      await writer.close();
      await lines.cancel();
      await child.status;
    },
  };
}

Deno.test({
  name: "countSyscalls counts the fsyncs made during the work, in forked children too",
  ignore: !await straceAvailable(),
  async fn() {
    const file = await Deno.makeTempFile();
    const shell = syncingShell(file);
    try {
      await shell.syncOnce(); // before tracing: not counted
      const { counts, value } = await countSyscalls(shell.pid, ["fsync", "fdatasync"], async () => {
        await shell.syncOnce();
        await shell.syncOnce();
        return "ok";
      });
      assert.equal(value, "ok");
      assert.deepEqual(counts, { fsync: 2, fdatasync: 0 });
    } finally {
      await shell.close();
      await Deno.remove(file);
    }
  },
});
