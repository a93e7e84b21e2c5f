/**
 * `bench/golist/`: containerd's own proxy snapshotter client (grpc-go) walking every snapshot,
 * built on the host with Debian's Go in GOPATH mode (as tests/conformance/build.ts builds the
 * conformance suite; no download) and run in the test kernel, so that a List of everything is
 * timed as containerd's garbage collection makes it, not only through grpc-js.
 *
 * Invariants: {@linkcode buildGolist} removes an old binary before building (never a stale
 * one); {@linkcode runGolist} returns one wall time per walk, each of a walk that saw `expect`
 * snapshots, or throws.
 *
 * @module
 */
import { join } from "node:path";
import { REPO_ROOT } from "../tests/uml/launcher.ts";

/** The binary (git-ignored). */
export const GOLIST: string = join(REPO_ROOT, ".work", "golist");

/** Builds {@linkcode GOLIST}; throws with what the compiler said. */
export async function buildGolist(): Promise<void> {
  await Deno.remove(GOLIST).catch(() => {});
  const out = await new Deno.Command("go", {
    args: ["build", "-o", GOLIST, "./bench/golist"],
    cwd: REPO_ROOT,
    env: {
      GO111MODULE: "off",
      GOPATH: "/usr/share/gocode",
      GOFLAGS: "",
      GOCACHE: Deno.env.get("GOCACHE") ?? join(REPO_ROOT, ".work", "go-cache"),
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`Cannot build bench/golist: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** Parses golist's output: one `<snapshots> <ms>` line per walk. */
export function parseGolist(text: string): { seen: number; ms: number }[] {
  return text.trim().split("\n").filter(Boolean).map((line) => {
    const [seen, ms] = line.trim().split(/\s+/).map(Number);
    if (!Number.isFinite(seen) || !Number.isFinite(ms)) {
      throw new Error(`Cannot read golist's line: ${JSON.stringify(line)}`);
    }
    return { seen, ms };
  });
}

/** Walks every snapshot on `socket` `count` times; the ms of each walk. */
export async function runGolist(socket: string, count: number, expect: number): Promise<number[]> {
  const out = await new Deno.Command(GOLIST, {
    args: [socket, String(count)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`golist failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  const walks = parseGolist(new TextDecoder().decode(out.stdout));
  for (const w of walks) {
    if (w.seen !== expect) throw new Error(`golist saw ${w.seen} snapshots, not ${expect}`);
  }
  return walks.map((w) => w.ms);
}
