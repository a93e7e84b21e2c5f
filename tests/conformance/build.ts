/**
 * Builds, on the host, the two Go test binaries that run containerd's snapshotter conformance
 * suite (`snapshots/testsuite` of containerd 1.6.20, from Debian's
 * golang-github-containerd-containerd-dev, built with Debian's Go in GOPATH mode, no download):
 *
 * - `dmsnap.test`, from `suite_test.go`: the suite against this project through containerd's
 *   proxy client;
 * - `devmapper.test`: upstream's own devmapper package tests, the reference.
 *
 * The kernel test `tests/e2e/conformance_test.ts` runs them inside user-mode Linux, where
 * compiling would be slow. `tests/run.ts` calls {@linkcode buildConformance} before booting it.
 *
 * @module
 */
import { join } from "node:path";
import { REPO_ROOT } from "../uml/launcher.ts";

/** Where the binaries go (git-ignored). */
export const CONFORMANCE_DIR: string = join(REPO_ROOT, ".work", "conformance");
/** The suite against this project, through containerd's proxy snapshotter client. */
export const DMSNAP_SUITE: string = join(CONFORMANCE_DIR, "dmsnap.test");
/** Upstream's devmapper package tests (TestSnapshotterSuite runs the same suite). */
export const UPSTREAM_SUITE: string = join(CONFORMANCE_DIR, "devmapper.test");

const GOPATH = "/usr/share/gocode";
const PACKAGES: [output: string, pkg: string][] = [
  [DMSNAP_SUITE, "./tests/conformance"],
  [UPSTREAM_SUITE, "github.com/containerd/containerd/snapshots/devmapper"],
];

/** Builds both binaries; throws naming what is missing or what the compiler said. */
export async function buildConformance(): Promise<void> {
  await Deno.mkdir(CONFORMANCE_DIR, { recursive: true });
  const testsuite = `${GOPATH}/src/github.com/containerd/containerd/snapshots/testsuite`;
  try {
    await Deno.stat(testsuite);
  } catch {
    throw new Error(
      `Cannot build the conformance suite: ${testsuite} is missing ` +
        "(apt-get install golang-go golang-github-containerd-containerd-dev; tools/setup.sh does)",
    );
  }
  for (const [output, pkg] of PACKAGES) {
    await Deno.remove(output).catch(() => {}); // never run a stale binary
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command("go", {
        args: ["test", "-c", "-o", output, pkg],
        cwd: REPO_ROOT,
        env: {
          GO111MODULE: "off",
          GOPATH,
          GOFLAGS: "",
          // the build cache stays with the checkout: a fresh CI machine may have no $HOME
          GOCACHE: Deno.env.get("GOCACHE") ?? join(REPO_ROOT, ".work", "go-cache"),
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (err) {
      throw new Error(`Cannot run go: ${(err as Error).message} (tools/setup.sh installs it)`, {
        cause: err,
      });
    }
    if (!out.success) {
      const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
      throw new Error(`Cannot build ${pkg}:\n${text.trim()}`);
    }
  }
}

if (import.meta.main) {
  await buildConformance();
  console.log(`built ${DMSNAP_SUITE} and ${UPSTREAM_SUITE}`);
}
