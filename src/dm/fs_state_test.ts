import assert from "node:assert/strict";
import { join } from "node:path";
import { ext4NeedsRecovery, needsRecovery } from "./fs_state.ts";

/** An image with an ext4 superblock whose incompat features are `incompat`. */
function image(incompat: number, magic = 0xef53): Uint8Array {
  const bytes = new Uint8Array(4096);
  const view = new DataView(bytes.buffer);
  view.setUint16(1024 + 0x38, magic, true);
  view.setUint32(1024 + 0x60, incompat, true);
  return bytes;
}

Deno.test("fs_state: ext4 needs_recovery is read from the superblock", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fs_state_test_" });
  try {
    const cases: [string, Uint8Array, boolean][] = [
      ["dirty", image(0x4 | 0x2 | 0x40), true],
      ["clean", image(0x2 | 0x40), false],
      ["not ext4", image(0x4, 0x1234), false],
      ["short", new Uint8Array(1100), false],
    ];
    for (const [name, bytes, expected] of cases) {
      const path = join(dir, name);
      await Deno.writeFile(path, bytes);
      assert.equal(await needsRecovery(path, "ext4"), expected, name);
      assert.equal(ext4NeedsRecovery(bytes.subarray(1024, 2048)), expected, name);
      assert.equal(await needsRecovery(path, "xfs"), false, `${name}: xfs is not known`);
    }
    await assert.rejects(needsRecovery(join(dir, "missing"), "ext4"), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
