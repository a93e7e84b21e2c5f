/**
 * LVM thin pools for production hosts (`pool create|status|destroy --lvm VG`): a thin-pool LV
 * in an existing volume group, with a metadata profile that makes LVM's own monitoring
 * (dmeventd) grow the pool before it fills. LVM commands run through the
 * {@linkcode CommandRunner}, so with `LC_ALL=C`, and with `DM_DISABLE_UDEV=1` where udev does
 * not run (LVM then turns udev sync and udev rules off by itself).
 *
 * Invariants:
 * - the pool's dm name is LVM's: the VG and LV names with each hyphen doubled, joined by one
 *   hyphen ({@linkcode lvmDmName}); that device carries the thin-pool target as long as LVM
 *   has never made a thin volume in the pool (its LVM transaction id is 0: the snapshotter's
 *   thin messages leave it alone). Once LVM has, the thin-pool device is `<dm name>-tpool`
 *   under a linear `<dm name>`, at every activation, even after those volumes are removed;
 *   such a pool is refused, since the snapshotter needs a pool of its own;
 * - the autoextend profile is `devmapper-snapshotter-<dm name>.profile` in LVM's profile
 *   directory, the same file `deploy/lvm-thin-pool.sh` writes;
 * - create changes nothing when the LV or the dm name exists already, and undoes what it did
 *   (the LV, the profile) when a later step fails;
 * - destroy never removes LVM's thin volumes and never deactivates a busy thin device.
 *
 * @module
 */
import { join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../util/errors.ts";
import { commandError, DmError } from "../dm/errors.ts";
import { validateDeviceName } from "../dm/names.ts";
import type { CommandRunner, RunResult } from "../dm/runner.ts";
import type { DeviceMapper } from "../dm/types.ts";
import {
  deactivateThinDevices,
  type PoolSpace,
  poolStatus,
  validateBlockSectors,
} from "./loop_pool.ts";

/** Default `thin_pool_autoextend_threshold`: grow when data or metadata is this % full. */
export const DEFAULT_AUTOEXTEND_THRESHOLD = 80;
/** Default `thin_pool_autoextend_percent`: grow by this % of the current size. */
export const DEFAULT_AUTOEXTEND_PERCENT = 20;
/** Smallest threshold LVM honours (lower values act as 50); 100 turns autoextend off. */
export const MIN_AUTOEXTEND_THRESHOLD = 50;
/** Prefix of the profiles this program (and `deploy/lvm-thin-pool.sh`) writes. */
export const PROFILE_PREFIX = "devmapper-snapshotter-";

/** Longest VG or LV name LVM accepts. */
const MAX_LVM_NAME = 127;
/** Characters of a VG or LV name (lvm(8), "Valid names"). */
const LVM_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$/;

/**
 * True when `name` is a VG or LV name LVM accepts: `a-z A-Z 0-9 + _ . -`, not starting with
 * `-`, not `.` or `..`, at most 127 characters.
 */
export function isValidLvmName(name: string): boolean {
  return LVM_NAME.test(name) && name !== "." && name !== ".." && name.length <= MAX_LVM_NAME;
}

/** Throws {@linkcode InvalidArgumentError} (message after `prefix`) unless both names are valid. */
function validateNames(ref: { vg: string; lv: string }, prefix: string): void {
  for (const [kind, name] of [["volume group", ref.vg], ["logical volume", ref.lv]]) {
    if (!isValidLvmName(name)) {
      throw new InvalidArgumentError(
        `${prefix}: invalid ${kind} name ${JSON.stringify(name)} (use a-z A-Z 0-9 + _ . -, ` +
          `not - first, at most ${MAX_LVM_NAME} characters)`,
      );
    }
  }
}

/** LVM's device-mapper name of LV `lv` in VG `vg`: hyphens inside either doubled. */
export function lvmDmName(vg: string, lv: string): string {
  return `${vg.replaceAll("-", "--")}-${lv.replaceAll("-", "--")}`;
}

/** Name of the metadata profile of pool `vg/lv` (without `.profile`). */
export function lvmProfileName(vg: string, lv: string): string {
  return `${PROFILE_PREFIX}${lvmDmName(vg, lv)}`;
}

/** Autoextend settings of a thin pool, in percent. */
export interface Autoextend {
  /** `thin_pool_autoextend_threshold`: 50..100, 100 = never. */
  threshold: number;
  /** `thin_pool_autoextend_percent`. */
  percent: number;
}

/** The profile's text (byte for byte what `deploy/lvm-thin-pool.sh` writes). */
export function lvmProfileText(a: Autoextend): string {
  return `activation {\n  thin_pool_autoextend_threshold = ${a.threshold}\n` +
    `  thin_pool_autoextend_percent = ${a.percent}\n}\n`;
}

/** Options for {@linkcode createLvmPool}. */
export interface CreateLvmPoolOptions {
  /** Existing volume group. */
  vg: string;
  /** Name of the new thin-pool LV. */
  lv: string;
  /** Data size in bytes (LVM rounds it up to whole extents). */
  dataSize: number;
  /** Metadata size in bytes; LVM chooses when absent. */
  metaSize?: number;
  /** Pool block (chunk) size in 512-byte sectors; LVM chooses (64 KiB) when absent. */
  blockSectors?: number;
  /** `--errorwhenfull y`: writes to a full pool fail at once instead of queueing. */
  errorIfNoSpace?: boolean;
  /** Default {@linkcode DEFAULT_AUTOEXTEND_THRESHOLD} and {@linkcode DEFAULT_AUTOEXTEND_PERCENT}. */
  autoextend?: Partial<Autoextend>;
  runner: CommandRunner;
  dm: DeviceMapper;
}

/** Checks the settings; returns the autoextend settings with defaults filled in. */
function validateCreate(o: CreateLvmPoolOptions): Autoextend {
  const prefix = `Cannot create pool "${o.vg}/${o.lv}"`;
  validateNames(o, prefix);
  const positive = (what: string, n: number | undefined) => {
    if (n !== undefined && (!Number.isSafeInteger(n) || n <= 0 || n % 512 !== 0)) {
      throw new InvalidArgumentError(
        `${prefix}: ${what} ${n} must be a positive number of sectors`,
      );
    }
  };
  positive("data size", o.dataSize);
  positive("metadata size", o.metaSize);
  if (o.blockSectors !== undefined) validateBlockSectors(o.blockSectors, prefix);
  const threshold = o.autoextend?.threshold ?? DEFAULT_AUTOEXTEND_THRESHOLD;
  const percent = o.autoextend?.percent ?? DEFAULT_AUTOEXTEND_PERCENT;
  if (!Number.isInteger(threshold) || threshold < MIN_AUTOEXTEND_THRESHOLD || threshold > 100) {
    throw new InvalidArgumentError(
      `${prefix}: autoextend threshold ${threshold} must be an integer in ${MIN_AUTOEXTEND_THRESHOLD}..100 (100 = never)`,
    );
  }
  if (!Number.isInteger(percent) || percent < 1) {
    throw new InvalidArgumentError(
      `${prefix}: autoextend percent ${percent} must be a positive integer`,
    );
  }
  return { threshold, percent };
}

/** The `lvcreate` arguments that make pool `vg/lv` with profile `profile`. */
export function lvcreateArgs(o: CreateLvmPoolOptions, profile: string): string[] {
  return [
    "--type",
    "thin-pool",
    "--size",
    `${o.dataSize}b`,
    ...(o.metaSize !== undefined ? ["--poolmetadatasize", `${o.metaSize}b`] : []),
    ...(o.blockSectors !== undefined ? ["--chunksize", `${o.blockSectors * 512}b`] : []),
    // like the loop pools (skip_block_zeroing): the snapshotter hands out filesystems only
    "--zero",
    "n",
    ...(o.errorIfNoSpace ? ["--errorwhenfull", "y"] : []),
    "--metadataprofile",
    profile,
    "--name",
    o.lv,
    o.vg,
  ];
}

/** A failed LVM command as a {@linkcode DmError} whose message starts with `prefix`. */
function lvmError(
  cmd: string,
  args: readonly string[],
  result: RunResult,
  prefix: string,
): DmError {
  const err = commandError(cmd, args, result);
  return new DmError({
    command: err.command,
    exitCode: err.exitCode,
    stderr: err.stderr,
    errno: err.errno,
    message: `${prefix}: ${err.message}`,
  }, { cause: err });
}

/** Runs an LVM command and returns its stdout; throws {@linkcode lvmError} on failure. */
async function lvm(
  runner: CommandRunner,
  cmd: string,
  args: readonly string[],
  prefix: string,
): Promise<string> {
  const result = await runner.run(cmd, args);
  if (result.code !== 0) throw lvmError(cmd, args, result, prefix);
  return result.stdout;
}

/** LVM's profile directory (`config/profile_dir`; `$LVM_SYSTEM_DIR/profile` if unreadable). */
export async function lvmProfileDir(runner: CommandRunner): Promise<string> {
  const result = await runner.run("lvmconfig", ["--typeconfig", "full", "config/profile_dir"]);
  const m = /^profile_dir="(.*)"$/m.exec(result.stdout);
  if (result.code === 0 && m) return m[1];
  // lvmconfig fails on a config without any section; LVM's built-in default then applies
  return join(Deno.env.get("LVM_SYSTEM_DIR") ?? "/etc/lvm", "profile");
}

/** One logical volume as `lvs` reports it. */
export interface LogicalVolume {
  name: string;
  /** `thin-pool`, `thin`, `linear`, ... */
  segtype: string;
  /** Bytes. */
  size: number;
  /** Metadata LV size in bytes (thin pools), else 0. */
  metadataSize: number;
  /** The thin pool of a thin volume, else "". */
  pool: string;
  /** `monitored`, `not monitored`, or "" when not monitorable or inactive. */
  monitor: string;
  /** Metadata profile, or "". */
  profile: string;
}

/** The visible LVs of `vg` (one `lvs` spawn); NotFoundError when the VG does not exist. */
export async function listLogicalVolumes(
  runner: CommandRunner,
  vg: string,
  prefix: string,
): Promise<LogicalVolume[]> {
  const args = [
    "--reportformat",
    "json",
    "--units",
    "b",
    "--nosuffix",
    "-o",
    "lv_name,segtype,lv_size,lv_metadata_size,pool_lv,seg_monitor,lv_profile",
    vg,
  ];
  const result = await runner.run("lvs", args);
  if (result.code !== 0) {
    const err = lvmError("lvs", args, result, prefix);
    if (/Volume group "[^"]*" not found/.test(result.stderr)) {
      throw new NotFoundError(`${prefix}: volume group "${vg}" not found`, { cause: err });
    }
    throw err;
  }
  type Row = Record<string, string>;
  let rows: Row[];
  try {
    const report = JSON.parse(result.stdout) as { report: Array<{ lv?: Row[] }> };
    rows = report.report.flatMap((r) => r.lv ?? []);
  } catch (err) {
    throw new DmError({
      command: ["lvs", ...args],
      exitCode: 0,
      stderr: result.stdout.slice(0, 200),
      message: `${prefix}: cannot read the output of lvs: ${(err as Error).message}`,
    }, { cause: err });
  }
  const bytes = (text: string | undefined) => Number(text || 0);
  return rows.map((r) => ({
    name: r.lv_name,
    segtype: r.segtype,
    size: bytes(r.lv_size),
    metadataSize: bytes(r.lv_metadata_size),
    pool: r.pool_lv ?? "",
    monitor: r.seg_monitor ?? "",
    profile: r.lv_profile ?? "",
  }));
}

/** A thin pool LV and its state. */
export interface LvmPool {
  vg: string;
  lv: string;
  /** The dm name to configure as `pool_name`. */
  dmName: string;
  /** The LV as `lvs` reports it. */
  volume: LogicalVolume;
  /** LVM thin volumes in the pool (the snapshotter must not share a pool with them). */
  thinVolumes: string[];
  /** Effective autoextend settings (the profile's, or lvm.conf's); undefined when unreadable. */
  autoextend: Autoextend | undefined;
  /** Path of this program's profile file for the pool. */
  profilePath: string;
  /** Space and state from the kernel. */
  space: PoolSpace;
}

/** The effective autoextend settings with metadata profile `profile` (one `lvmconfig` spawn). */
async function readAutoextend(
  runner: CommandRunner,
  profile: string,
): Promise<Autoextend | undefined> {
  const result = await runner.run("lvmconfig", [
    "--typeconfig",
    "full",
    ...(profile ? ["--mergedconfig", "--metadataprofile", profile] : []),
    "activation/thin_pool_autoextend_threshold",
    "activation/thin_pool_autoextend_percent",
  ]);
  const value = (key: string) => {
    const m = new RegExp(`^${key}=(\\d+)$`, "m").exec(result.stdout);
    return m ? Number(m[1]) : undefined;
  };
  const threshold = value("thin_pool_autoextend_threshold");
  const percent = value("thin_pool_autoextend_percent");
  return result.code === 0 && threshold !== undefined && percent !== undefined
    ? { threshold, percent }
    : undefined;
}

/** Options naming an LVM pool. */
export interface LvmPoolRef {
  vg: string;
  lv: string;
  runner: CommandRunner;
  dm: DeviceMapper;
}

/**
 * The thin-pool LV `vg/lv` and the names of LVM's thin volumes in it (one `lvs` spawn).
 * Errors start with `prefix`: InvalidArgumentError for an invalid name or an LV that is not a
 * thin pool, NotFoundError when the VG or LV is missing.
 */
async function findThinPoolVolume(
  o: LvmPoolRef,
  prefix: string,
): Promise<{ volume: LogicalVolume; thinVolumes: string[] }> {
  validateNames(o, prefix);
  const volumes = await listLogicalVolumes(o.runner, o.vg, prefix);
  const volume = volumes.find((v) => v.name === o.lv);
  if (!volume) throw new NotFoundError(`${prefix}: no logical volume "${o.lv}" in "${o.vg}"`);
  if (volume.segtype !== "thin-pool") {
    throw new InvalidArgumentError(`${prefix}: not a thin pool (segment type ${volume.segtype})`);
  }
  return { volume, thinVolumes: volumes.filter((v) => v.pool === o.lv).map((v) => v.name) };
}

/**
 * Pool `vg/lv`: LVM's view (size, monitoring, profile, autoextend, thin volumes) and the
 * kernel's (space, mode). NotFoundError when the VG or LV is missing; InvalidArgumentError
 * when the LV is not a thin pool.
 */
export async function lvmPoolStatus(o: LvmPoolRef, verb = "open"): Promise<LvmPool> {
  const prefix = `Cannot ${verb} pool "${o.vg}/${o.lv}"`;
  const { volume, thinVolumes } = await findThinPoolVolume(o, prefix);
  const dmName = lvmDmName(o.vg, o.lv);
  let space: PoolSpace;
  try {
    space = await poolStatus(o.dm, dmName);
  } catch (err) {
    if (err instanceof NotFoundError) {
      throw new FailedPreconditionError(
        `${prefix}: not active (no device "${dmName}"; activate it with lvchange -ay ${o.vg}/${o.lv})`,
        { cause: err },
      );
    }
    if (err instanceof InvalidArgumentError && await o.dm.info(`${dmName}-tpool`)) {
      throw new FailedPreconditionError(
        `${prefix}: its thin-pool device is "${dmName}-tpool", not "${dmName}", because LVM ` +
          `has made thin volumes in it (${thinVolumes.join(", ") || "since removed"}); the ` +
          "snapshotter needs a pool of its own",
        { cause: err },
      );
    }
    throw err;
  }
  const dir = await lvmProfileDir(o.runner);
  return {
    vg: o.vg,
    lv: o.lv,
    dmName,
    volume,
    thinVolumes,
    autoextend: await readAutoextend(o.runner, volume.profile),
    profilePath: join(dir, `${lvmProfileName(o.vg, o.lv)}.profile`),
    space,
  };
}

/**
 * Creates thin pool `vg/lv` with an autoextend profile and turns LVM's monitoring of it on
 * (`lvchange --monitor y`, which starts dmeventd if it is not running). Refuses when the LV or
 * the dm name exists; undoes its work on a later failure.
 */
export async function createLvmPool(o: CreateLvmPoolOptions): Promise<LvmPool> {
  const autoextend = validateCreate(o);
  const dmName = lvmDmName(o.vg, o.lv);
  validateDeviceName(dmName);
  const prefix = `Cannot create pool "${o.vg}/${o.lv}"`;
  const volumes = await listLogicalVolumes(o.runner, o.vg, prefix);
  if (volumes.some((v) => v.name === o.lv)) {
    throw new AlreadyExistsError(`${prefix}: the volume group has a logical volume "${o.lv}"`);
  }
  if (await o.dm.info(dmName)) {
    throw new AlreadyExistsError(`${prefix}: a device-mapper device "${dmName}" exists`);
  }
  const profile = lvmProfileName(o.vg, o.lv);
  const dir = await lvmProfileDir(o.runner);
  const profilePath = join(dir, `${profile}.profile`);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(profilePath, lvmProfileText(autoextend));
  let created = false;
  try {
    await lvm(o.runner, "lvcreate", lvcreateArgs(o, profile), prefix);
    created = true;
    await lvm(o.runner, "lvchange", ["--monitor", "y", `${o.vg}/${o.lv}`], prefix);
    const pool = await lvmPoolStatus(o, "create");
    if (pool.volume.monitor !== "monitored") {
      throw new FailedPreconditionError(
        `${prefix}: LVM reports it "${pool.volume.monitor || "unmonitored"}" after ` +
          `lvchange --monitor y: nothing would extend it (is dmeventd installed?)`,
      );
    }
    return pool;
  } catch (err) {
    if (created) {
      await o.runner.run("lvremove", ["--yes", `${o.vg}/${o.lv}`]).catch(() => {});
    }
    await Deno.remove(profilePath).catch(() => {});
    throw err;
  }
}

/** Options for {@linkcode destroyLvmPool}. */
export interface DestroyLvmPoolOptions extends LvmPoolRef {
  /** Also deactivate the snapshotter's (or anyone's) active thin devices on the pool. */
  force?: boolean;
}

/** What {@linkcode destroyLvmPool} did. */
export interface DestroyedLvmPool {
  /** Thin devices deactivated (only with `force`). */
  removedDevices: string[];
  /** The profile file deleted, if it existed. */
  deletedProfile: string | undefined;
}

/**
 * Removes thin pool `vg/lv` (`lvremove`), with every thin device in it, and its profile.
 * Refuses with {@linkcode FailedPreconditionError} while LVM thin volumes use it, or while thin
 * devices are active on it unless `force` (a busy one is never torn down).
 */
export async function destroyLvmPool(o: DestroyLvmPoolOptions): Promise<DestroyedLvmPool> {
  const prefix = `Cannot destroy pool "${o.vg}/${o.lv}"`;
  const { thinVolumes: lvmThins } = await findThinPoolVolume(o, prefix);
  if (lvmThins.length > 0) {
    throw new FailedPreconditionError(
      `${prefix}: LVM thin volumes use it (${
        lvmThins.join(", ")
      }); remove them with lvremove first`,
    );
  }
  const dmName = lvmDmName(o.vg, o.lv);
  const info = await o.dm.info(dmName);
  const removedDevices = info ? await deactivateThinDevices(info, { ...o, prefix }) : [];
  await lvm(o.runner, "lvremove", ["--yes", `${o.vg}/${o.lv}`], prefix);
  const profilePath = join(await lvmProfileDir(o.runner), `${lvmProfileName(o.vg, o.lv)}.profile`);
  let deletedProfile: string | undefined;
  try {
    await Deno.remove(profilePath);
    deletedProfile = profilePath;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return { removedDevices, deletedProfile };
}
