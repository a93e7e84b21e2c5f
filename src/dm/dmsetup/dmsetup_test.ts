import assert from "node:assert/strict";
import { Dmsetup } from "./dmsetup.ts";
import { DmError } from "../errors.ts";
import { FakeRunner } from "../../../testing/fake_runner.ts";

const BUSY = "device-mapper: remove ioctl on d  failed: Device or resource busy\nCommand failed.";

function dm(runner: FakeRunner, nodes = new Set<string>(["/dev/mapper/t1"])): Dmsetup {
  return new Dmsetup({
    runner,
    busyAttempts: 3,
    busyBackoffMs: 1,
    nodeExists: (p) => Promise.resolve(nodes.has(p)),
  });
}

Deno.test("dmsetup unit: EBUSY on remove is retried, then succeeds", async () => {
  const r = new FakeRunner().failOnce(["dmsetup", "remove"], BUSY).on(["dmsetup", "remove"], {});
  const d = dm(r);
  await d.remove("d");
  assert.deepEqual(r.argvs(), [["dmsetup", "remove", "d"], ["dmsetup", "remove", "d"]]);
  assert.equal(d.spawns, 2);
});

Deno.test("dmsetup unit: EBUSY on remove gives up after busyAttempts", async () => {
  const r = new FakeRunner().on(["dmsetup", "remove"], { code: 1, stderr: BUSY });
  const d = dm(r);
  await assert.rejects(d.remove("d", { deferred: true }), (e: unknown) => {
    assert.ok(e instanceof DmError);
    assert.equal(e.errno, "EBUSY");
    return true;
  });
  assert.equal(r.calls.length, 3);
  assert.deepEqual(r.calls[0].args, ["remove", "--deferred", "d"]);
  assert.ok(!r.argvs().flat().includes("--force"));
});

Deno.test("dmsetup unit: remove with retry uses dmsetup --retry once, not both loops", async () => {
  const r = new FakeRunner().on(["dmsetup", "remove"], { code: 1, stderr: BUSY });
  await assert.rejects(
    dm(r).remove("d", { retry: true }),
    (e: unknown) => e instanceof DmError && e.errno === "EBUSY",
  );
  assert.deepEqual(r.argvs(), [["dmsetup", "remove", "--retry", "d"]]);
});

Deno.test("dmsetup unit: suspend EBUSY retried; other errors are not retried", async () => {
  const r = new FakeRunner()
    .failOnce(
      ["dmsetup", "suspend"],
      "device-mapper: suspend ioctl on d  failed: Device or resource busy",
    )
    .on(["dmsetup", "suspend"], {})
    .on(["dmsetup", "remove"], {
      code: 1,
      stderr: "device-mapper: remove ioctl on d  failed: No such device or address",
    })
    .on(["dmsetup", "message"], {
      code: 1,
      stderr: "device-mapper: message ioctl on p  failed: Device or resource busy",
    })
    .on(["dmsetup", "resume"], {
      code: 1,
      stderr: "device-mapper: resume ioctl on d  failed: Device or resource busy",
    });
  const d = dm(r);
  await d.suspend("d", { noLockfs: true });
  assert.equal(r.calls.length, 2);
  assert.deepEqual(r.calls[1].args, ["suspend", "--nolockfs", "d"]);
  await assert.rejects(d.remove("d"), (e: unknown) => e instanceof DmError && e.errno === "ENXIO");
  assert.equal(r.calls.length, 3);
  // delete of a busy thin and resume are not retried
  await assert.rejects(
    d.deleteThin("p", 4),
    (e: unknown) => e instanceof DmError && e.errno === "EBUSY",
  );
  await assert.rejects(d.resume("d"), (e: unknown) => e instanceof DmError && e.errno === "EBUSY");
  assert.equal(r.calls.length, 5);
});

Deno.test("dmsetup unit: messages are one argv element", async () => {
  const r = new FakeRunner().on(["dmsetup", "message"], {});
  const d = dm(r);
  await d.createThin("p", 7);
  await d.createSnap("p", 8, 7);
  await d.deleteThin("p", 8);
  assert.deepEqual(r.argvs(), [
    ["dmsetup", "message", "p", "0", "create_thin 7"],
    ["dmsetup", "message", "p", "0", "create_snap 8 7"],
    ["dmsetup", "message", "p", "0", "delete 8"],
  ]);
  await assert.rejects(d.createThin("p", -1), /Invalid thin device id -1/);
  await assert.rejects(d.createThin("p", 2 ** 24), /Invalid thin device id/);
  await assert.rejects(d.createSnap("p", 1, 1.5), /Invalid thin device id 1.5/);
  assert.equal(r.calls.length, 3);
});

Deno.test("dmsetup unit: create verifies the node and falls back to mknodes", async () => {
  const nodes = new Set<string>();
  const r = new FakeRunner()
    .on(["dmsetup", "create"], {})
    .on(["dmsetup", "mknodes"], (call) => {
      nodes.add(`/dev/mapper/${call.args[1]}`);
      return {};
    });
  const d = dm(r, nodes);
  await d.create("t2", "0 8 thin /dev/mapper/p 1", { readOnly: true });
  assert.deepEqual(r.argvs(), [
    ["dmsetup", "create", "t2", "--readonly", "--table", "0 8 thin /dev/mapper/p 1"],
    ["dmsetup", "mknodes", "t2"],
  ]);
  // node present: no mknodes
  await d.create("t2", "0 8 thin /dev/mapper/p 1");
  assert.equal(r.calls.length, 3);
  // mknodes that does not help → clear error
  const r2 = new FakeRunner().on(["dmsetup"], {});
  await assert.rejects(
    dm(r2, new Set()).create("t3", "0 8 zero"),
    /Cannot create device node "\/dev\/mapper\/t3"/,
  );
});

Deno.test("dmsetup unit: info of a missing device is undefined, other errors throw", async () => {
  const r = new FakeRunner()
    .failOnce(["dmsetup", "info"], "Device does not exist.\nCommand failed.")
    .failOnce(["dmsetup", "info"], "Permission denied", 1)
    .on(["dmsetup", "info"], { stdout: "p L--w 254 0 1 1 0\n" });
  const d = dm(r);
  assert.equal(await d.info("x"), undefined);
  await assert.rejects(d.info("x"), /dmsetup info .* failed: Permission denied/);
  const info = await d.info("p");
  assert.equal(info?.name, "p");
  assert.equal(info?.blkdevname, "dm-0");
  assert.equal(info?.openCount, 1);
});

Deno.test("dmsetup unit: invalid names are rejected before spawning", async () => {
  const r = new FakeRunner();
  const d = dm(r);
  for (const name of ["", "-x", "a/b", "a b", "x".repeat(128), ".."]) {
    await assert.rejects(
      d.remove(name),
      (e: unknown) => e instanceof DmError && e.errno === "EINVAL",
      name,
    );
  }
  await assert.rejects(d.message("p", -1, "x"), /Invalid message sector/);
  assert.equal(r.calls.length, 0);
});

Deno.test("dmsetup unit: listing calls cost one spawn", async () => {
  const r = new FakeRunner()
    .on(["dmsetup", "info"], { stdout: "a L--w 254 0 1 1 0\nb L-sw 254 1 0 1 2\n" })
    .on(["dmsetup", "status", "--target", "thin"], { stdout: "b: 0 8 thin 0 -\n" })
    .on(["dmsetup", "ls"], { stdout: "No devices found\n" });
  const d = dm(r);
  const all = await d.infoAll();
  assert.deepEqual([...all.keys()], ["a", "b"]);
  assert.equal(all.get("b")?.suspended, true);
  const st = await d.statusAll("thin");
  assert.deepEqual(st.get("b"), [
    {
      target: "thin",
      start: 0,
      length: 8,
      mappedSectors: 0,
      highestMappedSector: null,
      failed: false,
    },
  ]);
  assert.deepEqual(await d.list(), []);
  assert.equal(d.spawns, 3);
});

Deno.test("dmsetup unit: create sets the device's UUID when given one", async () => {
  const r = new FakeRunner().on(["dmsetup", "create"], {});
  await dm(r).create("t1", "0 8 zero", { uuid: "DMSNAP-0123456789abcdef-1" });
  assert.deepEqual(r.argvs(), [
    ["dmsetup", "create", "t1", "--uuid", "DMSNAP-0123456789abcdef-1", "--table", "0 8 zero"],
  ]);
});
