/**
 * mount/umount by spawning `mount` and `umount` (Deno has no mount API). Used by the
 * template builder and by tests.
 *
 * @module
 */
import { commandError } from "./errors.ts";
import type { CommandRunner } from "./runner.ts";

/** Options for {@linkcode mount}. */
export interface MountOptions {
  device: string;
  /** Mount point (must exist). */
  target: string;
  /** Filesystem type (`-t`). */
  fsType: string;
  /** Mount options (`-o`, joined with commas); none when empty. */
  options?: readonly string[];
}

/** `mount -t <type> [-o <opts>] <device> <target>`. */
export async function mount(runner: CommandRunner, options: MountOptions): Promise<void> {
  const args = ["-t", options.fsType];
  if (options.options && options.options.length > 0) args.push("-o", options.options.join(","));
  args.push(options.device, options.target);
  const result = await runner.run("mount", args);
  if (result.code !== 0) throw commandError("mount", args, result);
}

/** `umount [-l] <target>`. */
export async function umount(
  runner: CommandRunner,
  target: string,
  options: { lazy?: boolean } = {},
): Promise<void> {
  const args = options.lazy ? ["-l", target] : [target];
  const result = await runner.run("umount", args);
  if (result.code !== 0) throw commandError("umount", args, result);
}
