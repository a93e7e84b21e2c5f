/**
 * LVM thin pools in the real kernel: what `deploy/lvm-thin-pool.sh` makes and what its
 * device-mapper name is (with and without LVM thin volumes in the pool); `pool create --lvm`
 * makes the same pool, whose autoextend profile makes LVM's own monitoring (dmeventd) grow it
 * as it fills; `pool status --lvm` and `pool destroy --lvm`.
 */
import assert from "node:assert/strict";
import { lvmProfileText } from "../../src/pool/lvm_pool.ts";
import { poll } from "../../testing/poll.ts";
import { dmNames, sh } from "./fixtures.ts";
import {
  createLvmTestEnv,
  LVM_ENV,
  LVM_SYSTEM_DIR,
  lvmRun,
  lvmSh,
  lvsRows,
} from "./lvm_fixtures.ts";
import { type MainResult, ROOT, runMain } from "./main_fixtures.ts";

const MiB = 1024 * 1024;
/** The script the README's production steps run. */
const DEPLOY_SCRIPT = "deploy/lvm-thin-pool.sh";

/** Runs `deploy/lvm-thin-pool.sh args...` with the test LVM environment. */
async function deployScript(...args: string[]) {
  const t0 = performance.now();
  const out = await lvmRun("bash", [DEPLOY_SCRIPT, ...args], { cwd: ROOT });
  assert.equal(out.code, 0, `${DEPLOY_SCRIPT} ${args.join(" ")}: ${out.stderr}\n${out.stdout}`);
  const m = /^# pool_name = "(.*)"$/m.exec(out.stdout);
  assert.ok(m, `no pool_name line in: ${out.stdout}`);
  return { poolName: m[1], ms: Math.round(performance.now() - t0), out: out.stdout };
}

/** Runs `main.ts pool args...` with the test LVM environment. */
function poolCli(...args: string[]): Promise<MainResult> {
  return runMain(["pool", ...args], { env: LVM_ENV });
}

/** The target of the first line of `dmsetup table name`. */
async function dmTarget(name: string): Promise<string> {
  return (await sh("dmsetup", "table", name)).split(/\s+/)[2];
}

Deno.test("lvm: deploy/lvm-thin-pool.sh makes the pool; its dm name is <vg>-<lv> with hyphens doubled, <vg>-<lv>-tpool once LVM has made thin volumes in it", async () => {
  await using lvm = await createLvmTestEnv();
  const pvs = await lvm.loops(128, 128);
  const vg = lvm.vgName();
  const lv = "containerd-pool";
  const created = await deployScript(vg, lv, "96M", ...pvs);
  const dm = `${vg.replaceAll("-", "--")}-containerd--pool`;
  assert.equal(created.poolName, dm);
  const ours = (await dmNames()).filter((n) => n.startsWith(dm)).sort();
  console.log(`dmsetup ls after the script (${created.ms} ms): ${ours.join(" ")}`);
  assert.deepEqual(ours, [dm, `${dm}_tdata`, `${dm}_tmeta`]);
  assert.equal(await dmTarget(dm), "thin-pool");
  assert.match(
    await sh("dmsetup", "table", dm),
    /^0 196608 thin-pool \d+:\d+ \d+:\d+ 128 \d+ 1 skip_block_zeroing$/,
    "96 MiB of data, 64 KiB blocks, no zeroing (--zero n), low water mark from the threshold",
  );
  const profile = `devmapper-snapshotter-${dm}`;
  assert.equal(
    await Deno.readTextFile(`${LVM_SYSTEM_DIR}/profile/${profile}.profile`),
    lvmProfileText({ threshold: 80, percent: 20 }),
    "the script writes the profile `pool create --lvm` writes",
  );
  const [row] = await lvsRows(`${vg}/${lv}`, ["lv_size", "seg_monitor", "lv_profile", "zero"]);
  assert.deepEqual(row, {
    lv_size: String(96 * MiB),
    seg_monitor: "monitored",
    lv_profile: profile,
    zero: "",
  });

  // The snapshotter's thin messages leave LVM's transaction id at 0; LVM activates such a pool
  // (one it never made a thin volume in) as <dm> itself.
  const txid = async () => (await lvsRows(`${vg}/${lv}`, ["transaction_id"]))[0].transaction_id;
  assert.equal(await txid(), "0");
  // An LVM thin volume in the pool: LVM renames the pool device <dm>-tpool and puts a linear
  // device under the old name; the snapshotter's pool_name would no longer be a thin-pool.
  await lvmSh(
    "lvcreate",
    "--type",
    "thin",
    "--virtualsize",
    "32M",
    "--thinpool",
    lv,
    "-n",
    "lvthin",
    vg,
  );
  const layered = (await dmNames()).filter((n) => n.startsWith(dm)).sort();
  console.log(`dmsetup ls with an LVM thin volume: ${layered.join(" ")}`);
  assert.deepEqual(layered, [dm, `${dm}-tpool`, `${dm}_tdata`, `${dm}_tmeta`]);
  assert.equal(await dmTarget(`${dm}-tpool`), "thin-pool");
  assert.equal(await dmTarget(dm), "linear");
  const refused = await poolCli("status", "--lvm", vg, "--name", lv);
  assert.equal(refused.code, 1, refused.out);
  assert.match(
    refused.err,
    /its thin-pool device is ".*-tpool", not ".*", because LVM has made thin volumes in it \(lvthin\)/,
  );
  // Removing it does not undo that: LVM's transaction id is no longer 0, and every later
  // activation brings the pool up as <dm>-tpool again.
  await lvmSh("lvremove", "--yes", `${vg}/lvthin`);
  await lvmSh("lvchange", "--activate", "n", `${vg}/${lv}`);
  assert.deepEqual((await dmNames()).filter((n) => n.startsWith(dm)), []);
  await lvmSh("lvchange", "--activate", "y", `${vg}/${lv}`);
  const reactivated = (await dmNames()).filter((n) => n.startsWith(dm)).sort();
  console.log(
    `after lvremove of it and reactivation (LVM transaction id ${await txid()}): ` +
      reactivated.join(" "),
  );
  assert.deepEqual(reactivated, [dm, `${dm}-tpool`, `${dm}_tdata`, `${dm}_tmeta`]);
  assert.notEqual(await txid(), "0");
  const still = await poolCli("status", "--lvm", vg, "--name", lv);
  assert.equal(still.code, 1, still.out);
  assert.match(still.err, /because LVM has made thin volumes in it \(since removed\)/);
});

Deno.test("lvm: pool create --lvm makes the script's pool, LVM's monitoring extends it as it fills, status and destroy", async () => {
  await using lvm = await createLvmTestEnv();
  const [pv] = await lvm.loops(256);
  const vg = lvm.vgName();
  await lvmSh("pvcreate", pv);
  await lvmSh("vgcreate", vg, pv);
  const dm = `${vg.replaceAll("-", "--")}-dmsnap--pool`;

  const t0 = performance.now();
  const created = await poolCli(
    "create",
    "--lvm",
    vg,
    "--name",
    "dmsnap-pool",
    "--data-size",
    "64MB",
  );
  const createMs = Math.round(performance.now() - t0);
  assert.equal(created.code, 0, created.err);
  console.log(`pool create --lvm (${createMs} ms):\n${created.out}`);
  assert.match(created.out, new RegExp(`^pool_name = "${dm}"$`, "m"));
  assert.match(created.out, /^autoextend: at 80% full by 20% \(profile devmapper-snapshotter-/m);
  assert.equal(await dmTarget(dm), "thin-pool");

  // the same pool as the script's: compare LVM's view of both, and the profiles
  await deployScript(vg, "script-pool", "64M");
  const fields = ["lv_size", "chunk_size", "zero", "discards", "lv_when_full", "seg_monitor"];
  const [cliRow] = await lvsRows(`${vg}/dmsnap-pool`, fields);
  const [scriptRow] = await lvsRows(`${vg}/script-pool`, fields);
  assert.deepEqual(cliRow, scriptRow);
  const profileDir = `${LVM_SYSTEM_DIR}/profile/devmapper-snapshotter-`;
  assert.equal(
    await Deno.readTextFile(`${profileDir}${dm}.profile`),
    await Deno.readTextFile(`${profileDir}${vg.replaceAll("-", "--")}-script--pool.profile`),
  );

  const status = async () => {
    const out = await poolCli("status", "--lvm", vg, "--name", "dmsnap-pool", "--json");
    assert.equal(out.code, 0, out.err);
    return JSON.parse(out.out);
  };
  const before = await status();
  assert.equal(before.name, dm);
  assert.equal(before.dataTotalBytes, 64 * MiB);
  assert.deepEqual(before.lvm.autoextend, { threshold: 80, percent: 20 });
  assert.equal(before.lvm.monitor, "monitored");

  // fill a thin device of the pool past the threshold (56 of 64 MiB = 87.5%): dmeventd's
  // thin plugin runs `lvextend --use-policies`, by 20% (rounded up to 4 MiB extents)
  await sh("dmsetup", "message", dm, "0", "create_thin 1");
  await sh("dmsetup", "create", `${dm}-dms-1`, "--table", `0 262144 thin /dev/mapper/${dm} 1`);
  const t1 = performance.now();
  await sh(
    "dd",
    "if=/dev/urandom",
    `of=/dev/mapper/${dm}-dms-1`,
    "bs=1M",
    "count=56",
    "oflag=direct",
    "status=none",
  );
  const grown = await poll(
    async () => {
      const [row] = await lvsRows(`${vg}/dmsnap-pool`, ["lv_size"]);
      return Number(row.lv_size) > 64 * MiB && Number(row.lv_size);
    },
    "dmeventd to extend the pool",
    { timeoutMs: 60_000, intervalMs: 250 },
  );
  const extendMs = Math.round(performance.now() - t1);
  const after = await status();
  console.log(
    `autoextend: ${before.dataTotalBytes / MiB} MiB → ${grown / MiB} MiB (kernel: ` +
      `${after.dataTotalBytes / MiB} MiB, ${after.dataUsedBytes / MiB} MiB used) ${extendMs} ms ` +
      "after the write began",
  );
  assert.equal(grown, 80 * MiB, "64 MiB + 20%, rounded up to whole 4 MiB extents");
  assert.equal(after.dataTotalBytes, grown);
  assert.equal(after.dataUsedBytes, 56 * MiB);

  // destroy: refused while a thin device is active, done with --force; the profile goes too
  const refused = await poolCli("destroy", "--lvm", vg, "--name", "dmsnap-pool");
  assert.equal(refused.code, 1);
  assert.match(refused.err, new RegExp(`thin devices still active on it: ${dm}-dms-1 `));
  const destroyed = await poolCli("destroy", "--lvm", vg, "--name", "dmsnap-pool", "--force");
  assert.equal(destroyed.code, 0, destroyed.err);
  assert.equal(
    destroyed.out,
    `deactivated thin device ${dm}-dms-1\nremoved LVM thin pool ${vg}/dmsnap-pool\n` +
      `deleted ${profileDir}${dm}.profile\n`,
  );
  assert.deepEqual((await lvsRows(vg, ["lv_name"])).map((r) => r.lv_name), ["script-pool"]);
  assert.ok(!(await dmNames()).some((n) => n.startsWith(dm)));
});
