/**
 * Checks the test kernel itself: device-mapper thin-pool and loop work, and the fixtures
 * build and tear down a real pool.
 */
import assert from "node:assert/strict";
import { createTestPool, dmNames, requireKernel, sh } from "./fixtures.ts";

Deno.test("kernel: device-mapper with thin-pool target is available", async () => {
  requireKernel();
  const targets = await sh("dmsetup", "targets");
  assert.match(targets, /^thin-pool\s/m);
  assert.match(targets, /^thin\s/m);
});

Deno.test("kernel: test pool fixture creates thin ids and tears down", async () => {
  let poolName = "";
  {
    await using pool = await createTestPool({ dataMb: 64 });
    poolName = pool.name;
    assert.deepEqual(await pool.thinIds(), []);
    await sh("dmsetup", "message", pool.name, "0", "create_thin 7");
    await sh(
      "dmsetup",
      "create",
      `${pool.name}-t7`,
      "--table",
      `0 8192 thin /dev/mapper/${pool.name} 7`,
    );
    assert.deepEqual(await pool.thinIds(), [7]);
    assert.ok((await dmNames()).includes(`${pool.name}-t7`));
  }
  const names = await dmNames();
  assert.ok(!names.some((n) => n.startsWith(poolName)), `left behind: ${names.join(",")}`);
});
