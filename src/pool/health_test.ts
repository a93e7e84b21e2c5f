import assert from "node:assert/strict";
import { InvalidArgumentError, UnavailableError } from "../util/errors.ts";
import { Dmsetup } from "../dm/dmsetup/dmsetup.ts";
import { FakeRunner } from "../../testing/fake_runner.ts";
import { parsePoolParams } from "../dm/parse.ts";
import { checkPoolHealth, openPool } from "./health.ts";

const HEALTHY = "0 213/2048 0/1024 - rw discard_passdown queue_if_no_space - 512";

Deno.test("pool health: healthy pool passes; each bad state has a clear Unavailable error", () => {
  checkPoolHealth(parsePoolParams(0, 131072, HEALTHY), "p");
  const bad: Array<[string, RegExp]> = [
    ["Fail", /^Pool "p" has failed/],
    ["0 1/2 3/4 - rw discard_passdown queue_if_no_space needs_check 512", /needs a metadata check/],
    ["0 1/2 3/4 - ro discard_passdown queue_if_no_space - 512", /is read-only/],
    [
      "0 112/1024 128/128 - out_of_data_space discard_passdown error_if_no_space - 256",
      /^Pool "p" is out of data space \(128\/128 data blocks used\)/,
    ],
  ];
  for (const [params, re] of bad) {
    assert.throws(() => checkPoolHealth(parsePoolParams(0, 8, params), "p"), (e: unknown) => {
      assert.ok(e instanceof UnavailableError, params);
      assert.match(e.message, re);
      return true;
    });
  }
});

function fakeDm(info: string | null, status: string): Dmsetup {
  const runner = new FakeRunner()
    .on(
      ["dmsetup", "info"],
      info === null
        ? { code: 1, stderr: "Device does not exist.\nCommand failed." }
        : { stdout: info + "\n" },
    )
    .on(["dmsetup", "status"], { stdout: status + "\n" });
  return new Dmsetup({ runner });
}

Deno.test("pool health: openPool errors", async () => {
  await assert.rejects(
    openPool(fakeDm(null, ""), "x"),
    (e: unknown) =>
      e instanceof UnavailableError && e.message === 'Cannot open pool "x": no such device',
  );
  await assert.rejects(
    openPool(fakeDm("x ---w 254 1 0 0 0", ""), "x"),
    /Cannot open pool "x": device has no live table/,
  );
  await assert.rejects(
    openPool(fakeDm("x L-sw 254 1 0 1 0", "0 8 thin-pool " + HEALTHY), "x"),
    /Cannot open pool "x": device is suspended/,
  );
  await assert.rejects(
    openPool(fakeDm("x L--w 254 1 0 1 0", "0 100 linear "), "x"),
    (e: unknown) =>
      e instanceof InvalidArgumentError &&
      e.message === 'Cannot open pool "x": not a thin-pool (target "linear")',
  );
  const ok = await openPool(fakeDm("x L--w 254 1 0 1 0", "0 8 thin-pool " + HEALTHY), "x");
  assert.equal(ok.status.totalDataBlocks, 1024);
  assert.equal(ok.info.minor, 1);
});
