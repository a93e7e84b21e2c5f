/**
 * Loop devices through `losetup` (dev/test pools only; the snapshotter never needs them).
 *
 * @module
 */
import { commandError } from "./errors.ts";
import type { CommandRunner } from "./runner.ts";

async function losetup(runner: CommandRunner, args: string[]): Promise<string> {
  const result = await runner.run("losetup", args);
  if (result.code !== 0) throw commandError("losetup", args, result);
  return result.stdout.trim();
}

/** Attaches `file` to a free loop device (`losetup --find --show`); returns e.g. `/dev/loop3`. */
export async function attachLoop(
  runner: CommandRunner,
  file: string,
  options: { readOnly?: boolean } = {},
): Promise<string> {
  const args = ["--find", "--show"];
  if (options.readOnly) args.push("--read-only");
  args.push(file);
  const dev = await losetup(runner, args);
  if (!/^\/dev\/loop\d+$/.test(dev)) {
    throw new Error(
      `losetup ${args.join(" ")} printed an unexpected device ${JSON.stringify(dev)}`,
    );
  }
  return dev;
}

/** Detaches loop devices (`losetup --detach <dev>...`); one spawn. */
export async function detachLoops(
  runner: CommandRunner,
  devices: readonly string[],
): Promise<void> {
  if (devices.length === 0) return;
  await losetup(runner, ["--detach", ...devices]);
}

/** Loop devices backed by `file` (`losetup --list --noheadings --output NAME --associated`). */
export async function loopsOf(runner: CommandRunner, file: string): Promise<string[]> {
  const out = await losetup(runner, [
    "--list",
    "--noheadings",
    "--output",
    "NAME",
    "--associated",
    file,
  ]);
  return out.split("\n").map((l) => l.trim()).filter(Boolean);
}

/** One attached loop device. */
export interface LoopDevice {
  name: string;
  /** Backing file as the kernel reports it (may end in ` (deleted)`). */
  backFile: string;
}

/** Every attached loop device with its backing file, in one spawn (`losetup --json --list`). */
export async function listLoops(runner: CommandRunner): Promise<LoopDevice[]> {
  const out = await losetup(runner, ["--json", "--list", "--output", "NAME,BACK-FILE"]);
  if (!out) return [];
  const parsed = JSON.parse(out) as { loopdevices?: Array<{ name: string; "back-file"?: string }> };
  return (parsed.loopdevices ?? []).map((d) => ({ name: d.name, backFile: d["back-file"] ?? "" }));
}
