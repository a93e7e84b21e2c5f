/**
 * The `containerd.io/snapshot/max-size` label on real devices: the grown filesystem has the
 * size (statfs through a mount) on ext4 and xfs, for a parentless snapshot and a child of a
 * committed one, with the parent's files; and a SIGKILL of the server while it grows the
 * filesystem (ext4: during `resize2fs`; xfs: while the device is mounted for `xfs_growfs`) is
 * reconciled at the next start like any interrupted creation: the key is gone, its device
 * deleted, no mount left, no thin id leaked, the committed parent intact; the same Prepare
 * then succeeds.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { poll } from "../../testing/poll.ts";
import { requireKernel, sh, shTry } from "./fixtures.ts";
import { createTestSnapshotter, thinDevicesOn, withMount } from "./snapshot_fixtures.ts";
import { MAX_SIZE_LABEL } from "../../src/snapshotter/size_label.ts";

const MiB = 1024 * 1024;

const FILESYSTEMS = [
  { fsType: "ext4", base: 32 * MiB, grown: 96 * MiB },
  // mkfs.xfs needs 300 MiB at least
  { fsType: "xfs", base: 320 * MiB, grown: 640 * MiB },
] as const;

/** Size the crash test grows to: large, so that the grow lasts long enough to be caught. */
const CRASH_GROWN = 6 * 1024 * MiB;

/** `statfs` size of the filesystem mounted at `dir` (df's 1K-blocks), bytes. */
async function dfBytes(dir: string): Promise<number> {
  const out = await sh("df", "-P", "-k", dir);
  return Number(out.split("\n")[1].trim().split(/\s+/)[1]) * 1024;
}

/** Live processes of process group `pgid` with their command names. */
async function groupCommands(pgid: number): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(entry.name)) continue;
    const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`).catch(() => "");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // state ppid pgrp …
    if (!stat || fields[0] === "Z" || Number(fields[2]) !== pgid) continue;
    names.push(stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")));
  }
  return names;
}

/** Command names of the children of process `pid` (from each thread's `children`). */
async function childCommands(pid: number): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const task of Deno.readDir(`/proc/${pid}/task`)) {
      const children = await Deno.readTextFile(`/proc/${pid}/task/${task.name}/children`)
        .catch(() => "");
      for (const child of children.split(" ").filter(Boolean)) {
        names.push((await Deno.readTextFile(`/proc/${child}/comm`).catch(() => "")).trim());
      }
    }
  } catch {
    // the process is gone
  }
  return names;
}

/** Mount points below `dir`. */
async function mountsBelow(dir: string): Promise<string[]> {
  return (await Deno.readTextFile("/proc/mounts")).split("\n").map((l) => l.split(" ")[1])
    .filter((m) => m?.startsWith(`${dir}/`));
}

for (const fs of FILESYSTEMS) {
  Deno.test(`max-size (${fs.fsType}): the grown filesystem has the size, parentless and as a child`, async () => {
    requireKernel();
    await using t = await createTestSnapshotter({
      dataMb: 2048,
      settings: { fsType: fs.fsType, baseImageSize: fs.base },
    });
    const s = t.snapshotter;
    const label = { [MAX_SIZE_LABEL]: String(fs.grown) };
    const sizes: Record<string, number> = {};
    await withMount(await s.prepare("plain", ""), async (dir) => {
      sizes.plain = await dfBytes(dir);
    });
    await withMount(await s.prepare("grown", "", label), async (dir) => {
      sizes.grown = await dfBytes(dir);
      await Deno.writeTextFile(join(dir, "file"), "kept");
    });
    await s.commit("grown-layer", "grown");
    await withMount(await s.prepare("inherits", "grown-layer"), async (dir) => {
      sizes.inherits = await dfBytes(dir);
      assert.equal(await Deno.readTextFile(join(dir, "file")), "kept");
    });
    await withMount(await s.prepare("layer-work", ""), async (dir) => {
      await Deno.writeTextFile(join(dir, "file"), "layer");
    });
    await s.commit("layer", "layer-work");
    await withMount(await s.prepare("child", "layer", label), async (dir) => {
      sizes.child = await dfBytes(dir);
      assert.equal(await Deno.readTextFile(join(dir, "file")), "layer");
    });
    console.log(JSON.stringify({ fsType: fs.fsType, base: fs.base, asked: fs.grown, sizes }));
    // df counts the blocks less the filesystem's own metadata (a large share of a small one):
    // never more than asked, and nearly all of what the label added
    assert.ok(sizes.plain <= fs.base);
    for (const key of ["grown", "inherits", "child"]) {
      assert.ok(sizes[key] <= fs.grown, `${key}: ${sizes[key]}`);
      assert.ok(sizes[key] - sizes.plain >= 0.9 * (fs.grown - fs.base), `${key}: ${sizes[key]}`);
    }
    // the table has the size at every activation: after a restart too
    const s2 = await t.reopen();
    const device = s2.pool.store.getDevice(s2.pool.store.getSnapshot("child")!.thinId)!;
    const table = await sh("dmsetup", "table", device.name);
    assert.equal(table.split(" ")[1], String(fs.grown / 512), table);
    if (fs.fsType !== "xfs") {
      // a clean filesystem after the offline grow
      const check = await shTry("e2fsck", "-fn", `/dev/mapper/${device.name}`);
      assert.equal(check.code, 0, check.stdout + check.stderr);
    }
  });

  Deno.test(`max-size (${fs.fsType}): SIGKILL during the grow is reconciled, nothing leaked or lost`, async () => {
    requireKernel();
    await using t = await createTestSnapshotter({
      dataMb: 8192, // sparse
      settings: { fsType: fs.fsType, baseImageSize: fs.base },
    });
    await withMount(await t.snapshotter.prepare("layer-work", ""), async (dir) => {
      await Deno.writeTextFile(join(dir, "file"), "layer");
    });
    await t.snapshotter.commit("layer", "layer-work");
    const growDir = join(t.settings.rootPath, "grow");
    const outcomes: Record<string, unknown>[] = [];
    for (const [i, parent] of ["", "layer", "layer"].entries()) {
      await t.snapshotter.close();
      const key = `killed-${i}`;
      const child = new Deno.Command("setsid", {
        args: [
          Deno.execPath(),
          "run",
          "-A",
          "--no-check",
          new URL("./max_size_worker.ts", import.meta.url).pathname,
          JSON.stringify({ ...t.settings, key, parent, sizeBytes: CRASH_GROWN }),
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const output = new Response(child.stdout).text();
      const errors = new Response(child.stderr).text();
      // kill at the grow: ext4 while resize2fs runs; xfs once the device is mounted for it
      const seen = await poll(
        async () => {
          if (fs.fsType === "xfs") {
            const mounted = await mountsBelow(growDir);
            if (mounted.length > 0) return `mounted ${mounted}`;
          } else {
            // setsid execs deno in place: the worker is child.pid
            const running = await childCommands(child.pid);
            if (running.includes("resize2fs")) return "resize2fs";
          }
          return false;
        },
        `the worker's grow of ${key}`,
        { timeoutMs: 60_000, intervalMs: 2, detail: async () => `${await errors}` },
      ).catch((err) => {
        child.kill("SIGKILL");
        throw err;
      });
      child.kill("SIGKILL");
      await child.status;
      // what the killed server started (resize2fs, mount, xfs_growfs) outlives it: let it end
      await poll(
        async () => (await groupCommands(child.pid)).length === 0,
        "the processes of the killed worker to finish",
        { timeoutMs: 30_000, intervalMs: 20 },
      );
      const stdout = await output;
      assert.ok(!stdout.includes("prepared"), `the kill came after the Prepare: ${stdout}`);
      const leftMounts = await mountsBelow(growDir);

      const s = await t.reopen();
      const report = s.lastReconcile!;
      outcomes.push({ key, parent, seen, leftMounts, ...report });
      assert.deepEqual(report.undone, [key], "the interrupted Prepare is undone");
      assert.deepEqual(report.busy, []);
      // a mount the kill left is released (and a mount point left without its mount removed)
      for (const left of leftMounts) assert.ok(report.released.includes(left), left);
      assert.deepEqual(await mountsBelow(growDir), [], "no mount left");
      const leftDirs = await Array.fromAsync(Deno.readDir(growDir)).catch((err) => {
        if (err instanceof Deno.errors.NotFound) return []; // ext4 grows without a mount
        throw err;
      });
      assert.deepEqual(leftDirs, [], "no mount point left");
      assert.equal((await s.list()).some((info) => info.name === key), false);
      // every thin id in the pool has a row and every row its thin id: nothing leaked
      const ids = (await t.pool.thinIds()).sort((a, b) => a - b);
      const rows = s.pool.store.listDevices();
      assert.deepEqual(rows.filter((d) => d.state !== "ready"), []);
      assert.deepEqual(rows.map((d) => d.thinId).sort((a, b) => a - b), ids);
      assert.deepEqual(await thinDevicesOn(t.pool.name), []);
      // nothing lost: the parent's content, and the same Prepare works now
      await withMount(
        await s.prepare(key, parent, { [MAX_SIZE_LABEL]: String(CRASH_GROWN) }),
        async (dir) => {
          assert.ok(await dfBytes(dir) > CRASH_GROWN * 0.9, "the 6 GiB filesystem");
          if (parent) assert.equal(await Deno.readTextFile(join(dir, "file")), "layer");
        },
      );
      await s.remove(key);
    }
    console.log(JSON.stringify({ fsType: fs.fsType, outcomes }));
    assert.ok(outcomes.length === 3);
  });
}
