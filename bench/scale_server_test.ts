import assert from "node:assert/strict";
import { formatLine } from "../src/util/log.ts";
import { parseLog } from "./server_log.ts";
import { startTimingFromLog } from "./scale_server.ts";

const T = 1_700_000_000_000;
const line = (ms: number, level: "info" | "debug", msg: string, fields = {}) =>
  formatLine(level, msg, fields, new Date(T + ms));

Deno.test("startTimingFromLog: times from the spawn, reconciliation from its op line", () => {
  const entries = parseLog([
    line(900, "info", "starting", { pool: "p" }),
    line(950, "info", "device-mapper backend: ioctl"),
    line(1100, "info", "reconciled metadata with the pool", { undone: [] }),
    line(1100, "debug", "snapshot operation", { op: "reconcile", spawns: 0, ms: 80.5 }),
    line(1130, "info", "serving", { socket: "/run/s.sock" }),
    line(1200, "debug", "snapshot operation", { op: "stat", spawns: 0, ms: 0.2 }),
  ].join("\n"));
  const t = startTimingFromLog(entries, T);
  assert.equal(t.startingMs, 900);
  assert.equal(t.servingMs, 1130);
  assert.equal(t.reconcileMs, 80.5);
  assert.equal(t.openMs, 1100 - 80.5 - 900);
});

Deno.test("startTimingFromLog: NaN for what the log does not say", () => {
  const t = startTimingFromLog(parseLog(line(10, "info", "starting")), T);
  assert.equal(t.startingMs, 10);
  assert.ok(Number.isNaN(t.servingMs));
  assert.ok(Number.isNaN(t.reconcileMs));
  assert.ok(Number.isNaN(t.openMs));
});
