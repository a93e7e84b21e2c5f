/**
 * Production's pool, end to end: `deploy/lvm-thin-pool.sh` makes an LVM thin pool on two disks
 * (loop devices here), our server (`main.ts serve`) serves containerd on it, containerd imports
 * the test image and runs containers with `ctr run --snapshotter dmsnap`; a container fills the
 * pool below `min_free_space`, new containers are refused with ResourceExhausted, and
 * `lvextend` of the pool while a container runs on it lifts the refusal at once.
 */
import assert from "node:assert/strict";
import { poll } from "../../testing/poll.ts";
import { poolThinIds } from "../kernel/fixtures.ts";
import { createLvmTestEnv, LVM_ENV, lvmRun, lvmSh, lvsRows } from "../kernel/lvm_fixtures.ts";
import { ROOT, runMain } from "../kernel/main_fixtures.ts";
import { PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { buildTestImage } from "./image.ts";
import { requireServerEntryPoint } from "./snapshotter_server.ts";

const MiB = 1024 * 1024;
/** The server refuses new snapshots below this much free data space. */
const MIN_FREE_MIB = 40;

interface PoolJson {
  dataTotalBytes: number;
  dataUsedBytes: number;
  lvm: { sizeBytes: number; monitor: string };
}

Deno.test("e2e: containerd runs containers on an LVM thin pool; lvextend while serving lifts the min_free_space refusal", async () => {
  await requireServerEntryPoint();
  await using lvm = await createLvmTestEnv();
  const timings: Record<string, number> = {};
  const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      timings[step] = Math.round(performance.now() - t0);
    }
  };

  // the README's production step, on two 128 MiB disks; autoextend off (threshold 100) so
  // that only the lvextend below changes the pool's size
  const pvs = await lvm.loops(128, 128);
  const vg = lvm.vgName();
  const lv = "containerd-pool";
  const script = await timed("deploy/lvm-thin-pool.sh", () =>
    lvmRun(
      "bash",
      ["deploy/lvm-thin-pool.sh", "--autoextend-threshold", "100", vg, lv, "96M", ...pvs],
      { cwd: ROOT },
    ));
  assert.equal(script.code, 0, script.stderr);
  const poolName = /^# pool_name = "(.*)"$/m.exec(script.stdout)?.[1];
  assert.equal(poolName, `${vg.replaceAll("-", "--")}-containerd--pool`);
  // `pool status --lvm`: the kernel's view of the pool and LVM's
  const status = async (): Promise<PoolJson> => {
    const out = await runMain(["pool", "status", "--lvm", vg, "--name", lv, "--json"], {
      env: LVM_ENV,
    });
    assert.equal(out.code, 0, out.err);
    return JSON.parse(out.out);
  };

  const imageDir = await Deno.makeTempDir({ prefix: "e2e-image-" });
  try {
    const image = await buildTestImage({ dir: imageDir });
    await using env = await timed("start server + containerd", () =>
      startE2eEnv({
        proxy: true,
        readyProxyPool: {
          name: poolName!,
          thinIds: () => poolThinIds(poolName!, `/dev/mapper/${poolName}_tmeta`),
        },
        baseImageSize: "128MB",
        minFreeSpace: `${MIN_FREE_MIB}MB`,
      }));
    const { ctd } = env;
    const snap = ["--snapshotter", PROXY_SNAPSHOTTER];
    const run = async (id: string, args: string[], extra = ["--rm"]) =>
      await ctd.ctr(["run", ...extra, ...snap, image.ref, id, ...args], { check: false });

    await timed("ctr images import", () => ctd.ctr(["images", "import", ...snap, image.archive]));
    const hello = await timed("ctr run (first container)", () => run("lvm-hello", []));
    assert.equal(hello.code, 0, hello.stderr);
    // containerd 1.6 may lose the output of a container that prints and exits at once
    // (see scenario.ts); the exit code is what counts here
    assert.ok(hello.stdout === image.message || hello.stdout === "", hello.stdout);
    const sleeper = await run(
      "lvm-sleeper",
      ["/bin/sh", "-c", "echo alive > /marker; exec sleep 300"],
      ["-d", "--null-io"],
    );
    assert.equal(sleeper.code, 0, sleeper.stderr);

    // fill the pool below min_free_space from inside a container
    const before = await status();
    assert.equal(before.dataTotalBytes, 96 * MiB);
    assert.equal(before.lvm.sizeBytes, 96 * MiB);
    const freeMib = (before.dataTotalBytes - before.dataUsedBytes) / MiB;
    assert.ok(freeMib > MIN_FREE_MIB, `only ${freeMib} MiB free before the fill`);
    const fillMib = Math.ceil(freeMib - MIN_FREE_MIB) + 8;
    const filler = await timed(`fill ${fillMib} MiB`, () =>
      run(
        "lvm-filler",
        ["/bin/sh", "-c", `head -c ${fillMib * MiB} /dev/urandom > /fill && sync && echo filled`],
        [],
      ));
    assert.equal(filler.code, 0, filler.stderr);
    const full = await status();
    const freeAfterFill = (full.dataTotalBytes - full.dataUsedBytes) / MiB;
    assert.ok(freeAfterFill < MIN_FREE_MIB, `${freeAfterFill} MiB free after the fill`);

    // a new container is refused (the server trusts a healthy status for up to a second, so
    // the refusal may take that long to show; each attempt that still passes is removed)
    let attempt = 0;
    const refused = await timed("refusal seen", () =>
      poll(
        async () => {
          const r = await run(`lvm-refused-${++attempt}`, ["true"]);
          return r.code !== 0 && r;
        },
        "a container to be refused below min_free_space",
        { timeoutMs: 15_000, intervalMs: 200 },
      ));
    // containerd 1.6's errdefs has no class for gRPC's ResourceExhausted: ctr shows the
    // server's message, which ends in the class's text
    assert.match(refused.stderr, /min_free_space .*: resource exhausted/);

    // lvextend while the sleeper runs on the pool: the pool's data grows, the refusal lifts at
    // once (the server reads a refusing status again before refusing)
    const extended = await timed(
      "lvextend +64M",
      () => lvmSh("lvextend", "--size", "+64M", `${vg}/${lv}`),
    );
    const after = await status();
    assert.equal(after.dataTotalBytes, 160 * MiB, extended);
    assert.equal(after.lvm.sizeBytes, 160 * MiB);
    const again = await timed("ctr run after lvextend", () => run("lvm-after", ["true"]));
    assert.equal(again.code, 0, again.stderr);
    const look = await ctd.ctr([
      "tasks",
      "exec",
      "--exec-id",
      "look",
      "lvm-sleeper",
      "cat",
      "/marker",
    ]);
    assert.equal(look.stdout, "alive");
    const [{ lv_size }] = await lvsRows(`${vg}/${lv}`, ["lv_size"]);
    assert.equal(Number(lv_size), 160 * MiB);

    console.log(
      JSON.stringify(
        {
          poolName,
          dataMiB: {
            before: before.dataTotalBytes / MiB,
            usedBeforeFill: before.dataUsedBytes / MiB,
            usedAfterFill: full.dataUsedBytes / MiB,
            afterLvextend: after.dataTotalBytes / MiB,
            usedAfterLvextend: after.dataUsedBytes / MiB,
          },
          minFreeMiB: MIN_FREE_MIB,
          refusal: refused.stderr,
          refusalAttempts: attempt,
          ms: timings,
        },
        null,
        1,
      ),
    );
    const log = (await env.server!.logTail(20_000)).split("\n")
      .filter((l) => /pool|space/i.test(l)).slice(-6);
    console.log(`server log (pool lines):\n${log.join("\n")}`);
  } finally {
    await Deno.remove(imageDir, { recursive: true });
  }
});
