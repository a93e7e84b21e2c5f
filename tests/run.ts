/**
 * `deno task test`: type-checks everything, runs the unit tests on the host, builds containerd's
 * snapshotter conformance suite (Go), then boots the user-mode Linux kernel once and runs the
 * kernel and end-to-end tests inside it. Prints one summary that counts both, ending in a line
 * `N passed, N failed`.
 *
 * Flags: `--unit-only`, `--kernel-only`, `--filter <text>` (passed to `deno test`),
 * `--timeout-min <n>` (kernel run limit, default 40).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { buildConformance } from "./conformance/build.ts";
import { REPO_ROOT, runInKernel } from "./uml/launcher.ts";

interface Tally {
  passed: number;
  failed: number;
  ignored: number;
  ran: boolean;
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "unit-only": { type: "boolean", default: false },
    "kernel-only": { type: "boolean", default: false },
    filter: { type: "string" },
    "timeout-min": { type: "string", default: "40" },
  },
});

const deno = Deno.execPath();
const filterArgs = values.filter ? ["--filter", values.filter] : [];
const UNIT_DIRS = ["src/", "testing/", "tests/unit/", "bench/"];
const KERNEL_DIRS = ["tests/kernel/", "tests/e2e/"];

/** Parses deno test's closing line: `ok | 12 passed | 0 failed | 1 ignored (3s)`. */
function parseSummary(text: string): Tally {
  // deno colours its output when it believes it writes to a terminal
  // deno-lint-ignore no-control-regex
  const plain = text.replace(/\x1b\[[0-9;]*m/g, "");
  const matches = [
    ...plain.matchAll(
      /^(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?(?: \| (\d+) ignored)?/gm,
    ),
  ];
  const last = matches.at(-1);
  if (!last) return { passed: 0, failed: 0, ignored: 0, ran: false };
  return {
    passed: Number(last[1]),
    failed: Number(last[3]),
    ignored: Number(last[5] ?? 0),
    ran: true,
  };
}

async function existingDirs(dirs: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const d of dirs) {
    try {
      if ((await Deno.stat(`${REPO_ROOT}/${d}`)).isDirectory) found.push(d);
    } catch {
      // absent
    }
  }
  return found;
}

async function typeCheck(): Promise<boolean> {
  console.log("== type check");
  const { success } = await new Deno.Command(deno, {
    args: [
      "check",
      "main.ts",
      "src/",
      "testing/",
      "tests/",
      "bench/",
      "tools/gen_proto_text.ts",
      "tools/gen_proto_types.ts",
      "tools/gen_readme.ts",
    ],
    cwd: REPO_ROOT,
  }).output();
  return success;
}

async function runUnit(): Promise<Tally> {
  console.log("== unit tests (host)");
  const dirs = await existingDirs(UNIT_DIRS);
  const child = new Deno.Command(deno, {
    args: ["test", "-A", "--no-check", "--parallel", ...filterArgs, ...dirs],
    cwd: REPO_ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const chunks: string[] = [];
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    Deno.stdout.writeSync(chunk);
    chunks.push(decoder.decode(chunk, { stream: true }));
  }
  await child.status;
  return parseSummary(chunks.join(""));
}

async function runKernel(): Promise<Tally> {
  console.log("== kernel tests (inside user-mode Linux)");
  const dirs = await existingDirs(KERNEL_DIRS);
  const result = await runInKernel({
    command: [deno, "test", "-A", "--no-check", ...filterArgs, ...dirs],
    // DMSNAP_TEST_* (e.g. the crash test's replay seed) reach the tests in the guest
    env: {
      NO_COLOR: "1",
      ...Object.fromEntries(
        Object.entries(Deno.env.toObject()).filter(([k]) => k.startsWith("DMSNAP_TEST_")),
      ),
    },
    timeoutMs: Number(values["timeout-min"]) * 60_000,
    stream: true,
  });
  if (result.code < 0) {
    console.error(
      result.timedOut
        ? `kernel run timed out after ${values["timeout-min"]} min`
        : "the kernel stopped before the tests reported a status",
    );
    console.error("---- kernel console (tail) ----\n" + result.console.slice(-6000));
  }
  const tally = parseSummary(result.stdout);
  console.log(`kernel run took ${(result.durationMs / 1000).toFixed(1)} s`);
  return tally;
}

const tallies: Record<string, Tally> = {};
let ok = true;
if (!values["kernel-only"]) {
  ok = await typeCheck() && ok;
  tallies.unit = await runUnit();
}
if (!values["unit-only"]) {
  // containerd's conformance suite is Go, compiled here: the test kernel would take minutes
  console.log("== build containerd's snapshotter conformance suite (go, host)");
  try {
    await buildConformance();
  } catch (err) {
    console.error((err as Error).message);
    ok = false; // its kernel tests fail too, naming the missing binary
  }
  tallies.kernel = await runKernel();
}

console.log("\n== summary");
let passed = 0;
let failed = 0;
for (const [name, t] of Object.entries(tallies)) {
  if (!t.ran) {
    console.log(`${name}: did not report results`);
    ok = false;
    continue;
  }
  console.log(`${name}: ${t.passed} passed, ${t.failed} failed, ${t.ignored} ignored`);
  passed += t.passed;
  failed += t.failed;
  if (t.failed > 0) ok = false;
}
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(ok ? 0 : 1);
