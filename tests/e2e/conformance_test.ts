/**
 * containerd's own snapshotter conformance suite (`snapshots/testsuite` of containerd 1.6.20,
 * the version under test) against this project, reached through containerd's proxy snapshotter
 * client over the unix socket: with the default settings, once more with every other fs type,
 * dm backend and gRPC transport, and through containerd's metadata layer. And the same suite
 * against upstream's built-in devmapper snapshotter in the same kernel (its own package tests),
 * which must meet the same expectation: every test passes but the one the suite skips for
 * everyone. The Go binaries are built on the host by `tests/run.ts`
 * (`tests/conformance/build.ts`).
 */
import assert from "node:assert/strict";
import { DMSNAP_SUITE, UPSTREAM_SUITE } from "../conformance/build.ts";
import { dmNames, requireKernel, sh } from "../kernel/fixtures.ts";
import { REPO_ROOT } from "../uml/launcher.ts";

const TESTSUITE_SOURCE =
  "/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite/testsuite.go";
/** The one test the suite skips for every snapshotter, and the reason it gives. */
const SUITE_SKIPS = new Map([["Rename", "rename test still fails on some kernels with overlay"]]);

interface SuiteRun {
  code: number;
  /** Subtest name → PASS, FAIL or SKIP. */
  outcomes: Map<string, string>;
  output: string;
  seconds: number;
}

/** The subtests `SnapshotterSuite` declares, read from the installed suite itself. */
async function declaredTests(): Promise<string[]> {
  const source = await Deno.readTextFile(TESTSUITE_SOURCE);
  return [...source.matchAll(/t\.Run\("([^"]+)", makeTest\(/g)].map((m) => m[1]);
}

async function runSuite(
  binary: string,
  env: Record<string, string> = {},
  test = "TestSnapshotterSuite",
): Promise<SuiteRun> {
  try {
    await Deno.stat(binary);
  } catch {
    throw new Error(`${binary} is missing: run the kernel tests through \`deno task test\``);
  }
  const started = performance.now();
  const out = await new Deno.Command(binary, {
    args: [
      "-test.root",
      "-test.v",
      "-test.parallel",
      "4",
      "-test.timeout",
      "15m",
      "-test.run",
      `^${test}$`,
    ],
    env: { LC_ALL: "C", DM_DISABLE_UDEV: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const outcomes = new Map<string, string>();
  for (const m of output.matchAll(/^\s*--- (PASS|FAIL|SKIP): (\w+)\/(\S+) /gm)) {
    if (m[2] === test) outcomes.set(m[3], m[1]);
  }
  return { code: out.code, outcomes, output, seconds: (performance.now() - started) / 1000 };
}

/** Every declared test ran and passed, but for the suite's own skips. */
function assertConformant(run: SuiteRun, declared: string[], what: string): void {
  const tail = run.output.slice(-8000);
  for (const name of declared) {
    const expected = SUITE_SKIPS.has(name) ? "SKIP" : "PASS";
    assert.equal(run.outcomes.get(name), expected, `${what}: ${name}\n${tail}`);
  }
  for (const [name, reason] of SUITE_SKIPS) {
    if (run.outcomes.get(name) === "SKIP") assert.ok(run.output.includes(reason), reason);
  }
  assert.equal(run.code, 0, `${what}: exit code\n${tail}`);
}

/** dm devices and loop devices, to show a run leaves none behind. */
async function devices(): Promise<{ dm: string[]; loops: string }> {
  return { dm: await dmNames(), loops: await sh("losetup", "--list", "--noheadings") };
}

/**
 * How the suite reaches the server, and with which settings: the defaults; every other choice
 * at once; and through containerd's metadata layer (its bolt store and namespaced keys in front
 * of the proxy), the path ctr and CRI calls take inside containerd.
 */
const VARIANTS: { name: string; test: string; env: Record<string, string> }[] = [
  { name: "ext4, ioctl, native gRPC (defaults)", test: "TestSnapshotterSuite", env: {} },
  {
    name: "xfs, dmsetup, grpc-js, async_remove, discard_blocks, online_discard",
    test: "TestSnapshotterSuite",
    env: {
      DMSNAP_FS_TYPE: "xfs",
      DMSNAP_DM_BACKEND: "dmsetup",
      DMSNAP_GRPC_TRANSPORT: "grpc-js",
      DMSNAP_CONFIG_EXTRA: "async_remove = true\ndiscard_blocks = true\nonline_discard = true\n",
    },
  },
  {
    name: "through containerd's metadata layer",
    test: "TestSnapshotterSuiteThroughMetadata",
    env: {},
  },
];

Deno.test("conformance: containerd 1.6.20's snapshotter suite passes through the proxy with every fs type, dm backend and transport, and through containerd's metadata layer; nothing left behind", async () => {
  requireKernel();
  const declared = await declaredTests();
  assert.ok(declared.length >= 20, `the suite declares ${declared.length} tests`);
  const before = await devices();
  for (const variant of VARIANTS) {
    const run = await runSuite(
      DMSNAP_SUITE,
      { DMSNAP_REPO: REPO_ROOT, DMSNAP_DENO: Deno.execPath(), ...variant.env },
      variant.test,
    );
    assertConformant(run, declared, `dmsnap (${variant.name})`);
    console.log(
      `dmsnap (${variant.name}): ${declared.length} tests, ${
        [...run.outcomes.values()].filter((o) => o === "PASS").length
      } passed in ${run.seconds.toFixed(1)} s`,
    );
  }
  assert.deepEqual(await devices(), before, "every pool, thin device and loop device is gone");
});

Deno.test("conformance: upstream's built-in devmapper ends the same suite with the same outcome on every test", async () => {
  requireKernel();
  const declared = await declaredTests();
  // the same expectation as ours above: the same outcome, test by test
  const upstream = await runSuite(UPSTREAM_SUITE);
  assertConformant(upstream, declared, "built-in devmapper");
  console.log(`built-in devmapper: ${declared.length} tests in ${upstream.seconds.toFixed(1)} s`);
});
