/**
 * Failures in the middle of device creation leave no thin device behind, and an unhealthy
 * pool gives a clear error. Faults are injected around the real `dmsetup` driver; the
 * pool, the kernel and the checks (`dmsetup ls`, the pool's thin ids) are real.
 */
import assert from "node:assert/strict";
import { createTestPool, dmNames, requireKernel, sh, shTry } from "./fixtures.ts";
import { poll } from "../../testing/poll.ts";
import {
  mountAll,
  realStack,
  testSettings,
  thinDevicesOn,
  unmount,
  withMount,
} from "./snapshot_fixtures.ts";
import { openSnapshotter } from "../../src/snapshotter/snapshotter.ts";
import type { DeviceMapper } from "../../src/dm/types.ts";
import { DmIoctl } from "../../src/dm/ioctl/ioctl.ts";
import type { Formatter } from "../../src/pool/thin_pool.ts";
import { errorKind } from "../../src/util/errors.ts";

/** The real driver `dm`, with `overrides` in place of its own methods. */
function withOverrides(dm: DeviceMapper, overrides: Partial<DeviceMapper>): DeviceMapper {
  return new Proxy(dm, {
    get(target, prop) {
      if (Object.hasOwn(overrides, prop)) return overrides[prop as keyof DeviceMapper];
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** The real driver, with `create` (activation) failing while `failCreate` is set. */
function failingActivation(dm: DeviceMapper, state: { failCreate: boolean }): DeviceMapper {
  return withOverrides(dm, {
    create: (name, table, options) =>
      state.failCreate
        ? Promise.reject(new Error("injected: activation failed"))
        : dm.create(name, table, options),
  });
}

Deno.test("pool failure: activation failing after create_snap leaves no thin device", async () => {
  requireKernel();
  await using pool = await createTestPool();
  const stack = realStack();
  const state = { failCreate: false };
  const s = await openSnapshotter({
    ...testSettings(pool),
    ...stack,
    dm: failingActivation(stack.dm, state),
  });
  try {
    await s.prepare("base-tmp", "");
    await s.commit("base", "base-tmp");
    const idsBefore = await pool.thinIds();
    const namesBefore = await dmNames();
    state.failCreate = true;
    await assert.rejects(s.prepare("child", "base"), /activation failed/);
    await assert.rejects(s.view("view", "base"), /activation failed/);
    state.failCreate = false;
    assert.deepEqual(await pool.thinIds(), idsBefore, "no thin id left behind");
    assert.deepEqual(await dmNames(), namesBefore, "no dm device left behind");
    assert.equal(s.pool.store.listDevices("creating").length, 0);
    // the keys are free again and the next attempt works
    await s.prepare("child", "base");
    assert.deepEqual((await s.list()).map((i) => i.name).sort(), ["base", "child"]);
  } finally {
    await s.close();
  }
});

Deno.test("pool failure: mkfs failing while building the template leaves no thin device", async () => {
  requireKernel();
  await using pool = await createTestPool();
  const stack = realStack();
  const broken: Formatter = {
    ...stack.formatter,
    mkfs: () => Promise.reject(new Error("injected: mkfs failed")),
  };
  const s = await openSnapshotter({ ...testSettings(pool), ...stack, formatter: broken });
  try {
    const err = await s.prepare("a", "").then(() => undefined, (e) => e);
    assert.match(String(err), /mkfs failed/);
    assert.deepEqual(await pool.thinIds(), []);
    assert.deepEqual(await thinDevicesOn(pool.name), []);
    assert.deepEqual(s.pool.store.listDevices(), []);
    await assert.rejects(s.stat("a"), /does not exist/);
  } finally {
    await s.close();
  }
});

Deno.test("pool failure: a pool that runs out of space gives a clear ResourceExhausted error", async () => {
  requireKernel();
  // 16 MiB of data: the template (a few MiB of ext4 metadata) fits, 32 MiB of writes do not.
  await using pool = await createTestPool({ dataMb: 16, errorIfNoSpace: true });
  const s = await openSnapshotter({ ...testSettings(pool), ...realStack() });
  try {
    const mounts = await s.prepare("a", "");
    const fill = await shTry(
      "dd",
      "if=/dev/zero",
      `of=${mounts[0].source}`,
      "bs=1M",
      "count=32",
      "oflag=direct",
    );
    assert.notEqual(fill.code, 0, "writing past the pool's size fails");
    assert.match(await sh("dmsetup", "status", pool.name), / out_of_data_space /);
    // the health check uses the last status read (no spawn on Prepare's path); read it now
    assert.equal((await s.poolStatus()).mode, "out_of_data_space");
    const err = await s.prepare("b", "").then(() => undefined, (e) => e);
    assert.ok(err, "prepare on a full pool fails");
    assert.equal(errorKind(err), "resource_exhausted", String(err));
    assert.match(String(err), /out of data space/);
    // freeing space makes the pool usable again
    await s.remove("a");
    await s.prepare("b", "");
  } finally {
    await s.close();
  }
});

/** The real driver, with `hooks` run just before and just after each real suspend. */
function aroundSuspend(
  dm: DeviceMapper,
  hooks: { before?: (name: string) => Promise<void>; after?: (name: string) => Promise<void> },
): DeviceMapper {
  return withOverrides(dm, {
    async suspend(name, options) {
      await hooks.before?.(name);
      await dm.suspend(name, options);
      await hooks.after?.(name);
    },
  });
}

Deno.test("pool: an active origin that vanishes just before its suspend, or while suspended, is snapshotted all the same", async () => {
  requireKernel();
  for (const backend of ["ioctl", "dmsetup"] as const) {
    // 1. containerd commits while the snapshot is mounted (Commit removes it --deferred); the
    //    unmount lands between the snapshotter's "is the origin active?" and its suspend, and
    //    the kernel's deferred removal takes the device away: the suspend fails with ENXIO.
    // 2. the origin is active but unused, and goes while it is suspended: resume gets ENXIO.
    for (const window of ["before suspend", "while suspended"] as const) {
      await using pool = await createTestPool();
      const stack = realStack();
      using ioctl = new DmIoctl();
      const real = backend === "ioctl" ? ioctl : stack.dm;
      const hooks: Parameters<typeof aroundSuspend>[1] = {};
      const s = await openSnapshotter({
        ...testSettings(pool),
        ...stack,
        dm: aroundSuspend(real, hooks),
      });
      const what = `${backend}, ${window}`;
      try {
        const dir = await mountAll(await s.prepare("a-tmp", ""));
        await Deno.writeTextFile(`${dir}/f`, "written in a");
        if (window === "before suspend") {
          await s.commit("a", "a-tmp"); // still mounted: removal deferred
          hooks.before = async (name) => {
            hooks.before = undefined;
            await unmount(dir);
            await waitGone(name);
          };
        } else {
          await unmount(dir);
          await s.commit("a", "a-tmp");
          const thinId = s.pool.store.getSnapshot("a")!.thinId;
          await s.pool.activate(s.pool.store.listDevices().find((d) => d.thinId === thinId)!);
          hooks.after = async (name) => {
            hooks.after = undefined;
            await real.remove(name);
          };
        }
        const content = await withMount(
          await s.prepare("b", "a"),
          (b) => Deno.readTextFile(`${b}/f`),
        );
        assert.equal(content, "written in a", what);
        assert.equal(hooks.before ?? hooks.after, undefined, `${what}: the hook ran`);
        assert.equal(s.pool.store.listDevices("creating").length, 0, what);
      } finally {
        await s.close();
      }
    }
  }
});

/** Waits until the dm device `name` is gone (deferred removal runs in the kernel's own time). */
async function waitGone(name: string): Promise<void> {
  await poll(async () => !(await dmNames()).includes(name), `the deferred removal of ${name}`, {
    timeoutMs: 10_000,
    intervalMs: 20,
  });
}

Deno.test("pool: snapshots of one active origin taken at the same time never interleave their suspend, create_snap and resume", async () => {
  requireKernel();
  await using pool = await createTestPool();
  const stack = realStack();
  const events: string[] = [];
  const real = new DmIoctl(); // closed with the snapshotter
  const dm = withOverrides(real, {
    async suspend(name, options) {
      events.push("suspend");
      await real.suspend(name, options);
      // hold the origin suspended a while: a second snapshot would come in here
      await new Promise((r) => setTimeout(r, 100));
    },
    async createSnap(pool, thinId, originId) {
      events.push("createSnap");
      await real.createSnap(pool, thinId, originId);
    },
    async resume(name) {
      events.push("resume");
      await real.resume(name);
    },
  });
  const s = await openSnapshotter({ ...testSettings(pool), ...stack, dm });
  try {
    const dir = await mountAll(await s.prepare("base-tmp", ""));
    try {
      await Deno.writeTextFile(`${dir}/f`, "base");
      await s.commit("base", "base-tmp"); // still mounted: the origin stays active
      events.length = 0;
      await Promise.all(["c1", "c2", "c3"].map((key) => s.prepare(key, "base")));
      assert.deepEqual(
        events,
        Array(3).fill(["suspend", "createSnap", "resume"]).flat(),
        "one snapshot of the origin at a time",
      );
    } finally {
      await unmount(dir);
    }
    for (const key of ["c1", "c2", "c3"]) {
      assert.equal(
        await withMount(await s.mounts(key), (d) => Deno.readTextFile(`${d}/f`)),
        "base",
      );
    }
  } finally {
    await s.close();
  }
});
