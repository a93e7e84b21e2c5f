import assert from "node:assert/strict";
import { DM_OPERATIONS, errnoLabel, instrumentDeviceMapper } from "./instrumented.ts";
import { DmError } from "./errors.ts";
import { Metrics } from "../metrics/metrics.ts";
import { METRIC_NAMES as N } from "../metrics/names.ts";
import { MemoryDeviceMapper } from "../../testing/memory_dm.ts";
import { parseExposition, samplesOf, valueOf } from "../../testing/prometheus_text.ts";

Deno.test("instrumented dm: every operation passes through, counted and timed by backend", async () => {
  const dm = new MemoryDeviceMapper();
  dm.createPool("p");
  const metrics = new Metrics({ processMetrics: false });
  const wrapped = instrumentDeviceMapper(dm, metrics, "ioctl");
  await wrapped.createThin("p", 1);
  await wrapped.create("t1", "0 2048 thin /dev/mapper/p 1");
  assert.equal(await wrapped.isActive("t1"), true);
  assert.equal((await wrapped.status("t1"))[0].target, "thin");
  await wrapped.suspend("t1");
  await wrapped.resume("t1");
  await wrapped.remove("t1");
  await wrapped.deleteThin("p", 1);
  assert.deepEqual(
    dm.calls.map((c) => c.op),
    ["createThin", "create", "isActive", "status", "suspend", "resume", "remove", "deleteThin"],
  );
  assert.equal(wrapped.spawns, dm.spawns);
  const e = parseExposition(await metrics.text());
  for (const operation of ["createThin", "create", "status", "remove", "deleteThin"]) {
    assert.equal(valueOf(e, N.dmOperations, { operation, backend: "ioctl" }), 1, operation);
    assert.equal(valueOf(e, `${N.dmDuration}_count`, { operation, backend: "ioctl" }), 1);
  }
  assert.equal(samplesOf(e, N.dmErrors).length, 0);
});

Deno.test("instrumented dm: a failure is counted by errno and rethrown unchanged", async () => {
  const dm = new MemoryDeviceMapper();
  dm.createPool("p");
  const metrics = new Metrics({ processMetrics: false });
  const wrapped = instrumentDeviceMapper(dm, metrics, "dmsetup");
  await wrapped.createThin("p", 1);
  const err = await wrapped.createThin("p", 1).catch((e) => e);
  assert.ok(err instanceof DmError);
  assert.equal(err.errno, "EEXIST");
  await assert.rejects(wrapped.remove("nope"), DmError);
  const e = parseExposition(await metrics.text());
  assert.equal(valueOf(e, N.dmOperations, { operation: "createThin", backend: "dmsetup" }), 2);
  assert.equal(
    valueOf(e, N.dmErrors, { operation: "createThin", backend: "dmsetup", errno: "EEXIST" }),
    1,
  );
  assert.equal(valueOf(e, N.dmErrors, { operation: "remove", errno: "ENXIO" }), 1);
  assert.equal(errnoLabel(new Error("x")), "unknown");
});

Deno.test("instrumented dm: wraps every method of the backend, close included", () => {
  const dm = new MemoryDeviceMapper();
  let closed = 0;
  dm.close = () => void closed++;
  const wrapped = instrumentDeviceMapper(dm, new Metrics({ processMetrics: false }), "ioctl");
  for (const op of DM_OPERATIONS) assert.equal(typeof wrapped[op], "function", op);
  wrapped.close?.();
  assert.equal(closed, 1);
});
