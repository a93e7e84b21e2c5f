/**
 * Whether a dm device exists, without a spawn: for the `dmsetup` backend, whose every query is a
 * process. The device number comes from `/dev/mapper/<name>` or, when the node is gone (a
 * deferred removal that is still pending deletes the node at once), from the number remembered
 * when the device was created or listed; sysfs then says whether that number is still a dm
 * device of that name. A number is forgotten once sysfs says otherwise.
 *
 * @module
 */
import { devicePath } from "./types.ts";

/** Remembers device numbers and answers "is this device active?" through sysfs. */
export class SysfsActivity {
  /** `major:minor` of devices seen active, by name. */
  readonly #numbers = new Map<string, string>();

  /** Records the number of an active device (from a listing). */
  remember(name: string, major: number, minor: number): void {
    this.#numbers.set(name, `${major}:${minor}`);
  }

  /** Records the number of `name` from its node, if the node exists. */
  async rememberNode(name: string): Promise<void> {
    try {
      const rdev = (await Deno.stat(devicePath(name))).rdev;
      if (rdev) this.#numbers.set(name, deviceNumber(rdev));
    } catch {
      // no node: nothing to remember
    }
  }

  /** True when a dm device called `name` exists (including one whose deferred removal waits). */
  async isActive(name: string): Promise<boolean> {
    let number = this.#numbers.get(name);
    try {
      const rdev = (await Deno.stat(devicePath(name))).rdev;
      if (rdev) number = deviceNumber(rdev);
    } catch {
      // no node: rely on the remembered number
    }
    if (!number) return false;
    try {
      const text = await Deno.readTextFile(`/sys/dev/block/${number}/dm/name`);
      if (text.trim() === name) return true;
    } catch {
      // no such device any more
    }
    this.#numbers.delete(name);
    return false;
  }
}

/** `major:minor` of a Linux device number (`st_rdev`). */
export function deviceNumber(rdev: number): string {
  const major = (Math.floor(rdev / 256) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  return `${major}:${minor}`;
}
