import assert from "node:assert/strict";
import { createLogger } from "../util/log.ts";
import { CommandTimeoutError, DenoCommandRunner, formatCommand } from "./runner.ts";
import { FakeRunner } from "../../testing/fake_runner.ts";

Deno.test("runner: no shell, one argv element per argument, LC_ALL=C", async () => {
  const runner = new DenoCommandRunner({ udev: true });
  const out = await runner.run("sh", [
    "-c",
    'printf "%s|" "$LC_ALL" "${DM_DISABLE_UDEV-unset}" "$#" "$@"',
    "argv0",
    "a b",
    "",
    "$(echo no)",
    "*",
  ]);
  assert.equal(out.code, 0);
  assert.equal(out.stdout, "C|unset|4|a b||$(echo no)|*|");
  assert.equal(runner.spawns, 1);
});

Deno.test("runner: DM_DISABLE_UDEV=1 when udev is not running", async () => {
  const runner = new DenoCommandRunner({ udev: false });
  assert.equal(runner.env.DM_DISABLE_UDEV, "1");
  const out = await runner.run("sh", ["-c", 'echo "$DM_DISABLE_UDEV"']);
  assert.equal(out.stdout, "1\n");
  // the caller cannot override LC_ALL
  assert.equal(new DenoCommandRunner({ env: { LC_ALL: "de_DE.UTF-8" } }).env.LC_ALL, "C");
});

Deno.test("runner: exit codes, stderr, stdin, missing programs", async () => {
  const runner = new DenoCommandRunner();
  const fail = await runner.run("sh", ["-c", "echo oops >&2; exit 3"]);
  assert.deepEqual(fail, { code: 3, stdout: "", stderr: "oops\n" });
  const cat = await runner.run("cat", [], { stdin: "line1\nline2" });
  assert.equal(cat.stdout, "line1\nline2");
  const bytes = await runner.run("wc", ["-c"], { stdin: new Uint8Array(1000) });
  assert.equal(bytes.stdout.trim(), "1000");
  // stdin is /dev/null when not given: cat ends at once
  assert.equal((await runner.run("cat", [])).stdout, "");
  const missing = await runner.run("definitely-not-a-program-xyz", ["a"]);
  assert.equal(missing.code, 127);
  assert.match(missing.stderr, /command not found/);
  assert.equal(runner.spawns, 4, "a program that cannot start is not a spawn");
});

Deno.test("runner: timeout kills the command and throws", async () => {
  const runner = new DenoCommandRunner();
  const t0 = performance.now();
  await assert.rejects(runner.run("sleep", ["5"], { timeoutMs: 100 }), (e: unknown) => {
    assert.ok(e instanceof CommandTimeoutError);
    assert.equal(e.message, "sleep 5 timed out after 100 ms");
    assert.deepEqual(e.command, ["sleep", "5"]);
    return true;
  });
  assert.ok(performance.now() - t0 < 3000);
  // a fast command under a limit is unaffected
  assert.equal((await runner.run("true", [], { timeoutMs: 5000 })).code, 0);
});

Deno.test("runner: every spawn is trace-logged with its duration", async () => {
  const lines: string[] = [];
  const logger = createLogger({ level: "trace", write: (l) => lines.push(l) });
  const runner = new DenoCommandRunner({ logger });
  await runner.run("sh", ["-c", "exit 2"]);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /level=trace msg="spawn" cmd=sh args=.* code=2 ms=\d+(\.\d)?/);
});

Deno.test("runner: formatCommand quotes what needs quoting", () => {
  assert.equal(
    formatCommand(["dmsetup", "message", "p", "0", "create_thin 1"]),
    'dmsetup message p 0 "create_thin 1"',
  );
  assert.equal(formatCommand(["mkfs.ext4", ""]), 'mkfs.ext4 ""');
  assert.equal(formatCommand(["a", 'say "hi"']), 'a "say \\"hi\\""');
});

Deno.test("fake runner: rules in order, limited uses, unexpected commands throw", async () => {
  const r = new FakeRunner()
    .on(["x", "a"], { stdout: "first" }, 1)
    .on(/^x a/, { stdout: "second" })
    .on((c) => c.cmd === "y", (c) => ({ code: c.args.length }));
  assert.equal((await r.run("x", ["a"])).stdout, "first");
  assert.equal((await r.run("x", ["a", "b"])).stdout, "second");
  assert.deepEqual(await r.run("y", ["1", "2"]), { code: 2, stdout: "", stderr: "" });
  await assert.rejects(r.run("z", []), /FakeRunner: unexpected command \["z"\]/);
  assert.deepEqual(r.argvs(), [["x", "a"], ["x", "a", "b"], ["y", "1", "2"], ["z"]]);
  assert.equal(r.spawns, 4);
});
