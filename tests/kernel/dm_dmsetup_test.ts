/**
 * The dmsetup backend against the real kernel: the cases both backends share
 * (tests/kernel/dm_backend_cases.ts), with one spawn per command, and what only this backend
 * does (its runner's environment, the mknodes fallback).
 */
import assert from "node:assert/strict";
import { Dmsetup } from "../../src/dm/dmsetup/dmsetup.ts";
import { DenoCommandRunner } from "../../src/dm/runner.ts";
import { devicePath, thinTable } from "../../src/dm/types.ts";
import { MiB, registerBackendCases } from "./dm_backend_cases.ts";
import { createTestPool, requireKernel, shTry } from "./fixtures.ts";

function driver(): Dmsetup {
  requireKernel();
  return new Dmsetup({ runner: new DenoCommandRunner(), busyAttempts: 3, busyBackoffMs: 20 });
}

registerBackendCases({
  label: "dm dmsetup",
  open: driver,
  spawnsPerCommand: 1,
  failed: { create: "dmsetup create", remove: "dmsetup remove", message: "dmsetup message" },
  library: /^\d+\.\d+\.\d+/,
  nodeKeptWhileRemovalPending: false,
});

Deno.test("dm dmsetup: runner sets LC_ALL=C and DM_DISABLE_UDEV without udev", async () => {
  const runner = new DenoCommandRunner();
  const out = await runner.run("sh", [
    "-c",
    'echo "$LC_ALL $DM_DISABLE_UDEV" "$#"',
    "x",
    "a b",
    "",
  ]);
  assert.equal(out.stdout, "C 1 2\n");
  const missing = await runner.run("no-such-program-xyz", []);
  assert.equal(missing.code, 127);
  assert.equal(runner.spawns, 1);
});

Deno.test("dm dmsetup: create makes /dev/mapper node even if it was deleted (mknodes fallback)", async () => {
  const dm = driver();
  await using pool = await createTestPool({ dataMb: 64 });
  await dm.createThin(pool.name, 1);
  // simulate a host where nothing creates nodes: check via nodeExists that lies once
  const runner = new DenoCommandRunner();
  let checks = 0;
  const lying = new Dmsetup({
    runner,
    nodeExists: async (p) => {
      checks++;
      if (checks === 1) {
        await Deno.remove(p); // the node really is missing now
        return false;
      }
      try {
        await Deno.stat(p);
        return true;
      } catch {
        return false;
      }
    },
  });
  const name = `${pool.name}-t1`;
  await lying.create(name, thinTable(pool.name, 1, 1 * MiB));
  assert.equal(checks, 2);
  assert.ok((await Deno.stat(devicePath(name))).isBlockDevice, "mknodes recreated the node");
  assert.deepEqual(
    (await shTry("dmsetup", "info", "-c", "--noheadings", "-o", "name", name)).stdout,
    name,
  );
  assert.equal(runner.spawns, 2, "create + mknodes");
  await dm.remove(name);
});
