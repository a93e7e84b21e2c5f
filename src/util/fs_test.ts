import assert from "node:assert/strict";
import { pathExists } from "./fs.ts";

Deno.test("pathExists: a file, a missing path, a dangling link with and without noFollow", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "");
    await Deno.symlink(`${dir}/missing`, `${dir}/dangling`);
    assert.equal(await pathExists(`${dir}/f`), true);
    assert.equal(await pathExists(`${dir}/f`, { noFollow: true }), true);
    assert.equal(await pathExists(`${dir}/missing`), false);
    assert.equal(await pathExists(`${dir}/dangling`), false);
    assert.equal(await pathExists(`${dir}/dangling`, { noFollow: true }), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pathExists: a failure other than absence is thrown", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/f`, "");
    // a path through a regular file: ENOTDIR, not NotFound
    await assert.rejects(pathExists(`${dir}/f/x`), (e: unknown) => {
      assert.ok(!(e instanceof Deno.errors.NotFound), String(e));
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
