import assert from "node:assert/strict";
import { join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../util/errors.ts";
import { DmError } from "../dm/errors.ts";
import { type FakeCall, FakeRunner } from "../../testing/fake_runner.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import {
  createLvmPool,
  type CreateLvmPoolOptions,
  destroyLvmPool,
  isValidLvmName,
  lvcreateArgs,
  lvmDmName,
  lvmPoolStatus,
  lvmProfileName,
  lvmProfileText,
} from "./lvm_pool.ts";

const MiB = 1024 * 1024;

Deno.test("lvm pool unit: dm names double the hyphens inside VG and LV names", () => {
  assert.equal(lvmDmName("vg0", "containerd-pool"), "vg0-containerd--pool");
  assert.equal(lvmDmName("my-vg", "a-b-c"), "my--vg-a--b--c");
  assert.equal(lvmDmName("vg", "pool"), "vg-pool");
  assert.equal(
    lvmProfileName("vg0", "containerd-pool"),
    "devmapper-snapshotter-vg0-containerd--pool",
  );
  // distinct pools never share a profile, although "a-b"/"c" and "a"/"b-c" read alike
  assert.notEqual(lvmProfileName("a-b", "c"), lvmProfileName("a", "b-c"));
  for (const ok of ["vg0", "a.b+c_d-e", "_x", "x".repeat(127)]) assert.ok(isValidLvmName(ok), ok);
  for (const bad of ["", "-vg", ".", "..", "a/b", "a b", "x".repeat(128), "é"]) {
    assert.ok(!isValidLvmName(bad), bad);
  }
});

Deno.test("lvm pool unit: the profile and the lvcreate arguments", () => {
  assert.equal(
    lvmProfileText({ threshold: 80, percent: 20 }),
    "activation {\n  thin_pool_autoextend_threshold = 80\n  thin_pool_autoextend_percent = 20\n}\n",
  );
  const base = { vg: "vg0", lv: "p", dataSize: 64 * MiB } as CreateLvmPoolOptions;
  assert.deepEqual(lvcreateArgs(base, "prof"), [
    "--type",
    "thin-pool",
    "--size",
    "67108864b",
    "--zero",
    "n",
    "--metadataprofile",
    "prof",
    "--name",
    "p",
    "vg0",
  ]);
  assert.deepEqual(
    lvcreateArgs({ ...base, metaSize: 4 * MiB, blockSectors: 256, errorIfNoSpace: true }, "x")
      .join(" "),
    "--type thin-pool --size 67108864b --poolmetadatasize 4194304b --chunksize 131072b " +
      "--zero n --errorwhenfull y --metadataprofile x --name p vg0",
  );
});

/** An LVM volume group simulated over a {@linkcode MemoryDeviceMapper}. */
interface FakeLvm {
  runner: FakeRunner;
  dm: MemoryDeviceMapper;
  profileDir: string;
  /** LVs of the VG: name → [segtype, pool]. */
  lvs: Map<string, { segtype: string; pool: string; profile: string }>;
  argvs(program: string): string[][];
  /** What `lvs` says of the pool's monitoring (default `monitored`). */
  monitor: { state: string };
  /** The next run of `program` (lvcreate or lvchange) fails with `stderr`, exit code 5. */
  failNext(program: string, stderr: string): void;
}

async function fakeLvm(vg: string): Promise<FakeLvm & AsyncDisposable> {
  const dm = new MemoryDeviceMapper();
  const profileDir = await Deno.makeTempDir({ prefix: "lvm-profile-" });
  const lvs = new Map<string, { segtype: string; pool: string; profile: string }>();
  const monitor = { state: "monitored" };
  const lvsJson = () =>
    JSON.stringify({
      report: [{
        lv: [...lvs].map(([name, v]) => ({
          lv_name: name,
          segtype: v.segtype,
          lv_size: "67108864",
          lv_metadata_size: v.segtype === "thin-pool" ? "4194304" : "",
          pool_lv: v.pool,
          seg_monitor: v.segtype === "thin-pool" ? monitor.state : "",
          lv_profile: v.profile,
        })),
      }],
    });
  const last = (call: FakeCall) => call.args[call.args.length - 1];
  const failures = new Map<string, string>();
  const failure = (program: string) => {
    const stderr = failures.get(program);
    failures.delete(program);
    return stderr === undefined ? undefined : { code: 5, stderr };
  };
  const runner = new FakeRunner()
    .on(
      ["lvs"],
      (call) =>
        last(call) === vg
          ? { stdout: lvsJson() }
          : { code: 5, stderr: `  Volume group "${last(call)}" not found\n` },
    )
    .on(["lvmconfig", "--typeconfig", "full", "config/profile_dir"], {
      stdout: `profile_dir="${profileDir}"\n`,
    })
    .on(["lvmconfig"], {
      stdout: "thin_pool_autoextend_threshold=80\nthin_pool_autoextend_percent=20\n",
    })
    .on(["lvcreate"], (call) => {
      const failed = failure("lvcreate");
      if (failed) return failed;
      const arg = (flag: string) => call.args[call.args.indexOf(flag) + 1];
      const lv = arg("--name");
      lvs.set(lv, { segtype: "thin-pool", pool: "", profile: arg("--metadataprofile") });
      dm.createPool(lvmDmName(vg, lv), { dataBlocks: 1024 });
      return {};
    })
    .on(["lvchange"], () => failure("lvchange") ?? {})
    .on(["lvremove"], (call) => {
      const lv = last(call).split("/")[1];
      lvs.delete(lv);
      return dm.remove(lvmDmName(vg, lv)).then(() => ({}), () => ({}));
    })
    .on(["dmsetup", "table"], async () => {
      const lines: string[] = [];
      for (const name of await dm.list()) lines.push(`${name}: ${await dm.table(name)}`);
      return { stdout: lines.join("\n") + "\n" };
    });
  return {
    runner,
    dm,
    profileDir,
    lvs,
    argvs: (program) => runner.argvs().filter((a) => a[0] === program),
    failNext: (program, stderr) => failures.set(program, stderr),
    monitor,
    async [Symbol.asyncDispose]() {
      await Deno.remove(profileDir, { recursive: true });
    },
  };
}

Deno.test("lvm pool unit: create writes the profile, makes and monitors the LV", async () => {
  await using lvm = await fakeLvm("vg-0");
  const { runner, dm } = lvm;
  const pool = await createLvmPool({
    vg: "vg-0",
    lv: "containerd-pool",
    dataSize: 64 * MiB,
    autoextend: { threshold: 70 },
    runner,
    dm,
  });
  assert.equal(pool.dmName, "vg--0-containerd--pool");
  const profile = "devmapper-snapshotter-vg--0-containerd--pool";
  assert.equal(pool.profilePath, join(lvm.profileDir, `${profile}.profile`));
  assert.equal(
    await Deno.readTextFile(pool.profilePath),
    lvmProfileText({ threshold: 70, percent: 20 }),
  );
  assert.deepEqual(lvm.argvs("lvcreate"), [[
    "lvcreate",
    ...lvcreateArgs({ vg: "vg-0", lv: "containerd-pool", dataSize: 64 * MiB, runner, dm }, profile),
  ]]);
  assert.deepEqual(lvm.argvs("lvchange"), [["lvchange", "--monitor", "y", "vg-0/containerd-pool"]]);
  assert.equal(pool.volume.monitor, "monitored");
  assert.equal(pool.volume.profile, profile);
  assert.deepEqual(pool.autoextend, { threshold: 80, percent: 20 }, "as lvmconfig reported it");
  assert.equal(pool.space.dataTotalBytes, 1024 * 65536);
  assert.deepEqual(pool.thinVolumes, []);
  // the status of the same pool reads the same
  const status = await lvmPoolStatus({ vg: "vg-0", lv: "containerd-pool", runner, dm });
  assert.deepEqual({ ...status, space: undefined }, { ...pool, space: undefined });
});

Deno.test("lvm pool unit: create refuses bad settings and taken names before changing anything", async () => {
  await using lvm = await fakeLvm("vg0");
  const { runner, dm } = lvm;
  const base = { vg: "vg0", lv: "p", dataSize: 64 * MiB, runner, dm };
  const bad: Array<[Partial<CreateLvmPoolOptions>, RegExp]> = [
    [{ vg: "-x" }, /invalid volume group name "-x"/],
    [{ lv: "a/b" }, /invalid logical volume name "a\/b"/],
    [{ dataSize: 1000 }, /data size 1000 must be a positive number of sectors/],
    [{ metaSize: 0 }, /metadata size 0/],
    [{ blockSectors: 100 }, /block size 100 sectors/],
    [{ autoextend: { threshold: 49 } }, /autoextend threshold 49 must be an integer in 50\.\.100/],
    [{ autoextend: { threshold: 101 } }, /autoextend threshold 101/],
    [{ autoextend: { percent: 0 } }, /autoextend percent 0 must be a positive integer/],
  ];
  for (const [patch, re] of bad) {
    await assert.rejects(createLvmPool({ ...base, ...patch }), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError, String(e));
      assert.match(e.message, /^Cannot create pool "[^"]*": /);
      assert.match(e.message, re);
      return true;
    });
  }
  assert.equal(runner.calls.length, 0);

  await assert.rejects(createLvmPool({ ...base, vg: "nope" }), (e: unknown) => {
    assert.ok(e instanceof NotFoundError, String(e));
    assert.equal(e.message, 'Cannot create pool "nope/p": volume group "nope" not found');
    return true;
  });
  lvm.lvs.set("p", { segtype: "linear", pool: "", profile: "" });
  await assert.rejects(
    createLvmPool(base),
    (e) => e instanceof AlreadyExistsError && /has a logical volume "p"/.test(e.message),
  );
  lvm.lvs.clear();
  dm.createPool("vg0-p");
  await assert.rejects(
    createLvmPool(base),
    (e) => e instanceof AlreadyExistsError && /device-mapper device "vg0-p" exists/.test(e.message),
  );
  assert.deepEqual(lvm.argvs("lvcreate"), []);
  assert.deepEqual([...Deno.readDirSync(lvm.profileDir)], []);
});

Deno.test("lvm pool unit: a failed step after lvcreate removes the LV and the profile", async () => {
  await using lvm = await fakeLvm("vg0");
  const { runner, dm } = lvm;
  lvm.failNext("lvchange", "  Failed to start dmeventd.\n");
  await assert.rejects(
    createLvmPool({ vg: "vg0", lv: "p", dataSize: 64 * MiB, runner, dm }),
    (e: unknown) => {
      assert.ok(e instanceof DmError, String(e));
      assert.equal(
        e.message,
        'Cannot create pool "vg0/p": lvchange --monitor y vg0/p failed: Failed to start dmeventd.',
      );
      return true;
    },
  );
  assert.deepEqual(lvm.argvs("lvremove"), [["lvremove", "--yes", "vg0/p"]]);
  assert.equal(lvm.lvs.size, 0);
  assert.ok(!dm.hasDevice("vg0-p"));
  assert.deepEqual([...Deno.readDirSync(lvm.profileDir)], [], "profile removed");

  // lvcreate itself failing: nothing to remove but the profile
  lvm.failNext("lvcreate", '  Volume group "vg0" has insufficient free space.\n');
  await assert.rejects(
    createLvmPool({ vg: "vg0", lv: "p", dataSize: 64 * MiB, runner, dm }),
    /^DmError: Cannot create pool "vg0\/p": lvcreate .* failed: Volume group "vg0" has insufficient free space\.$/,
  );
  assert.equal(lvm.argvs("lvremove").length, 1);
  assert.deepEqual([...Deno.readDirSync(lvm.profileDir)], []);

  // monitoring that does not take (no dmeventd): nothing would grow the pool
  lvm.monitor.state = "not monitored";
  await assert.rejects(
    createLvmPool({ vg: "vg0", lv: "p", dataSize: 64 * MiB, runner, dm }),
    (e: unknown) =>
      e instanceof FailedPreconditionError &&
      e.message ===
        'Cannot create pool "vg0/p": LVM reports it "not monitored" after lvchange --monitor y: ' +
          "nothing would extend it (is dmeventd installed?)",
  );
  assert.equal(lvm.argvs("lvremove").length, 2);
  assert.equal(lvm.lvs.size, 0);
  assert.deepEqual([...Deno.readDirSync(lvm.profileDir)], []);
});

Deno.test("lvm pool unit: status and destroy refuse a pool LVM thin volumes share", async () => {
  await using lvm = await fakeLvm("vg0");
  const { runner, dm } = lvm;
  await createLvmPool({ vg: "vg0", lv: "p", dataSize: 64 * MiB, runner, dm });
  // what LVM does when a thin volume is created in the pool: the pool device is renamed
  // <dm name>-tpool and a linear device takes the old name
  lvm.lvs.set("thin1", { segtype: "thin", pool: "p", profile: "" });
  await dm.remove("vg0-p");
  dm.createPool("vg0-p-tpool");
  await dm.create("vg0-p", "0 8 linear 7:0 0");
  await assert.rejects(
    lvmPoolStatus({ vg: "vg0", lv: "p", runner, dm }),
    (e: unknown) =>
      e instanceof FailedPreconditionError &&
      e.message ===
        'Cannot open pool "vg0/p": its thin-pool device is "vg0-p-tpool", not "vg0-p", because ' +
          "LVM has made thin volumes in it (thin1); the snapshotter needs a pool of its own",
  );
  await assert.rejects(
    destroyLvmPool({ vg: "vg0", lv: "p", runner, dm, force: true }),
    (e: unknown) =>
      e instanceof FailedPreconditionError &&
      /LVM thin volumes use it \(thin1\); remove them with lvremove first/.test(e.message),
  );
  assert.deepEqual(lvm.argvs("lvremove"), []);
  await assert.rejects(
    lvmPoolStatus({ vg: "vg0", lv: "thin1", runner, dm }),
    (e) =>
      e instanceof InvalidArgumentError && /not a thin pool \(segment type thin\)/.test(e.message),
  );
  await assert.rejects(
    lvmPoolStatus({ vg: "vg0", lv: "q", runner, dm }),
    (e) => e instanceof NotFoundError && /no logical volume "q" in "vg0"/.test(e.message),
  );
});

Deno.test("lvm pool unit: destroy deactivates thin devices only with force, never busy ones", async () => {
  await using lvm = await fakeLvm("vg0");
  const { runner, dm } = lvm;
  const pool = await createLvmPool({ vg: "vg0", lv: "p", dataSize: 64 * MiB, runner, dm });
  await dm.message("vg0-p", 0, "create_thin 1");
  await dm.create("vg0-p-dms-1", "0 8192 thin /dev/mapper/vg0-p 1");
  await assert.rejects(
    destroyLvmPool({ vg: "vg0", lv: "p", runner, dm }),
    (e: unknown) =>
      e instanceof FailedPreconditionError &&
      e.message ===
        'Cannot destroy pool "vg0/p": thin devices still active on it: vg0-p-dms-1 ' +
          "(use force to deactivate them)",
  );
  dm.openDevice("vg0-p-dms-1");
  await assert.rejects(
    destroyLvmPool({ vg: "vg0", lv: "p", runner, dm, force: true }),
    /thin device "vg0-p-dms-1" is in use \(mounted or open\)/,
  );
  assert.ok(dm.hasDevice("vg0-p-dms-1"));
  assert.deepEqual(lvm.argvs("lvremove"), []);
  dm.closeDevice("vg0-p-dms-1");
  const done = await destroyLvmPool({ vg: "vg0", lv: "p", runner, dm, force: true });
  assert.deepEqual(done, { removedDevices: ["vg0-p-dms-1"], deletedProfile: pool.profilePath });
  assert.deepEqual(lvm.argvs("lvremove"), [["lvremove", "--yes", "vg0/p"]]);
  assert.ok(!dm.hasDevice("vg0-p"));
  await assert.rejects(
    destroyLvmPool({ vg: "vg0", lv: "p", runner, dm }),
    (e) => e instanceof NotFoundError && /no logical volume "p" in "vg0"/.test(e.message),
  );
});
