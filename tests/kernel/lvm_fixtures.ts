/**
 * LVM inside the test kernel: volume groups on loop devices over sparse files, with LVM's
 * configuration kept apart from the host's.
 *
 * What LVM 2.03 (Debian 12) needs in user-mode Linux, found by running it there: nothing about
 * udev. The kernel has no udev, and `DM_DISABLE_UDEV=1` (which the test kernel's init exports,
 * and the snapshotter's command runner sets where udev does not run) makes LVM turn
 * `udev_sync` and `udev_rules` off by itself and create the `/dev/mapper` nodes and `/dev/<vg>`
 * links itself; Debian's defaults already have `obtain_device_list_from_udev = 0` and
 * `use_devicesfile = 0`. What does need changing: the guest sees the host's `/` through
 * hostfs, so LVM's metadata backups and archives would land in the host's `/etc/lvm`. Every
 * LVM command here therefore runs with `LVM_SYSTEM_DIR` = {@linkcode LVM_SYSTEM_DIR} (on the
 * guest's own tmpfs), whose `lvm.conf` turns backups off; profiles go to its `profile/`.
 * dmeventd, which LVM starts for monitoring, inherits that environment, and is stopped again
 * when the fixture that saw it start is disposed.
 *
 * @module
 */
import { poll } from "../../testing/poll.ts";
import {
  type CommandResult,
  requireKernel,
  runCommand,
  stdoutOf,
  thinDevicesOn,
} from "./fixtures.ts";

/** LVM's configuration directory for kernel tests (guest tmpfs; the same for every test). */
export const LVM_SYSTEM_DIR = "/tmp/dmsnap-lvm";
/** The lvm.conf written there. */
export const TEST_LVM_CONF =
  `# kernel tests: the guest sees the host's files; keep LVM's backups out of them
backup {
  backup = 0
  archive = 0
}
`;
/** Environment for LVM commands in kernel tests. */
export const LVM_ENV: Readonly<Record<string, string>> = {
  LVM_SYSTEM_DIR,
  LC_ALL: "C",
  DM_DISABLE_UDEV: "1",
  // the test runner's inherited descriptors are no concern of LVM's
  LVM_SUPPRESS_FD_WARNINGS: "1",
};
const DMEVENTD_PID = "/run/dmeventd.pid";

/** Runs `cmd` with {@linkcode LVM_ENV}; returns the exit code and trimmed output. */
export function lvmRun(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<CommandResult> {
  return runCommand(cmd, args, { ...options, env: LVM_ENV });
}

/** Like {@linkcode lvmRun}, but throws with the command's output unless it succeeds. */
export async function lvmSh(cmd: string, ...args: string[]): Promise<string> {
  return stdoutOf(cmd, args, await lvmRun(cmd, args));
}

/** One LV as `lvs --reportformat json` reports it, with the fields asked for. */
export type LvRow = Record<string, string>;

/** `lvs` of `target` (a VG or VG/LV) with fields `fields`, sizes in bytes. */
export async function lvsRows(target: string, fields: string[]): Promise<LvRow[]> {
  const out = await lvmSh(
    "lvs",
    "--reportformat",
    "json",
    "--units",
    "b",
    "--nosuffix",
    "-o",
    fields.join(","),
    target,
  );
  return (JSON.parse(out) as { report: Array<{ lv: LvRow[] }> }).report.flatMap((r) => r.lv);
}

function dmeventdPid(): number | undefined {
  try {
    const pid = Number(Deno.readTextFileSync(DMEVENTD_PID).trim());
    Deno.statSync(`/proc/${pid}`);
    return pid;
  } catch {
    return undefined;
  }
}

/** Loop devices and volume groups made for one test; dispose removes them all. */
export interface LvmTestEnv extends AsyncDisposable {
  /** Directory of the backing files; free for the test to use. */
  dir: string;
  /** New loop devices over sparse files of these sizes in MiB. */
  loops(...mib: number[]): Promise<string[]>;
  /** A fresh volume group name with a hyphen in it (`dmsnap-vg-<random>`), removed at dispose. */
  vgName(): string;
}

/**
 * Prepares {@linkcode LVM_SYSTEM_DIR} and returns a place for a test's loop devices and volume
 * groups. Dispose deactivates the thin devices of the groups' thin pools, removes the groups,
 * wipes and detaches the loops, deletes the files, and stops dmeventd if it started meanwhile.
 */
export async function createLvmTestEnv(): Promise<LvmTestEnv> {
  requireKernel();
  await Deno.mkdir(`${LVM_SYSTEM_DIR}/profile`, { recursive: true });
  await Deno.writeTextFile(`${LVM_SYSTEM_DIR}/lvm.conf`, TEST_LVM_CONF);
  const dmeventdBefore = dmeventdPid();
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-lvm-" });
  const loops: string[] = [];
  const vgs: string[] = [];
  return {
    dir,
    async loops(...mib) {
      const made: string[] = [];
      for (const size of mib) {
        const file = `${dir}/pv${loops.length}`;
        await lvmSh("truncate", "-s", `${size}M`, file);
        const loop = await lvmSh("losetup", "--find", "--show", file);
        loops.push(loop);
        made.push(loop);
      }
      return made;
    },
    vgName() {
      const vg = `dmsnap-vg-${crypto.randomUUID().slice(0, 6)}`;
      vgs.push(vg);
      return vg;
    },
    async [Symbol.asyncDispose]() {
      for (const vg of vgs) {
        const pools = await lvsRows(vg, ["lv_name", "segtype"]).catch(() => []);
        for (const pool of pools.filter((p) => p.segtype === "thin-pool")) {
          const dm = `${vg.replaceAll("-", "--")}-${pool.lv_name.replaceAll("-", "--")}`;
          for (const name of [dm, `${dm}-tpool`]) {
            for (const device of await thinDevicesOn(name)) {
              await lvmRun("umount", ["-l", `/dev/mapper/${device}`]);
              await lvmRun("dmsetup", ["remove", "--retry", device]);
            }
          }
        }
        await lvmRun("vgremove", ["--yes", "--force", vg]);
      }
      for (const loop of loops) {
        await lvmRun("pvremove", ["--yes", loop]);
        await lvmRun("losetup", ["-d", loop]);
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      const pid = dmeventdPid();
      if (pid !== undefined && pid !== dmeventdBefore) {
        // started by this test's LVM commands: with nothing left to monitor it exits on SIGTERM
        Deno.kill(pid, "SIGTERM");
        await poll(() => dmeventdPid() === undefined, `dmeventd (pid ${pid}) to exit`, {
          timeoutMs: 10_000,
          intervalMs: 50,
        });
      }
    },
  };
}
