import assert from "node:assert/strict";
import { formatLine } from "../src/log.ts";
import { parseLog, parseLogLine, segmentByMarkers, summarize } from "./server_log.ts";

const at = new Date("2024-01-01T00:00:00Z");
const line = (msg: string, fields: Record<string, unknown>) => formatLine("debug", msg, fields, at);

Deno.test("parseLogLine reads bare and quoted values as the server writes them", () => {
  const e = parseLogLine(
    line("spawn", { cmd: "dmsetup", args: ["message", "pool x", "0"], code: 0, ms: 12.5 }),
  );
  assert.equal(e?.msg, "spawn");
  assert.equal(e?.cmd, "dmsetup");
  assert.deepEqual(JSON.parse(e!.args), ["message", "pool x", "0"]);
  assert.equal(e?.ms, "12.5");
  assert.equal(parseLogLine("Listening on /run/x.sock"), null);
});

Deno.test("segmentByMarkers gives each marker the lines up to the next marker", () => {
  const text = [
    line("rpc", { method: "Stat", key: "before-any-marker", duration_ms: 9 }),
    line("snapshot operation", { op: "stat", key: "bench-mark-0", spawns: 0, ms: 0.1 }),
    line("rpc", { method: "Stat", key: "bench-mark-0", code: "NOT_FOUND", duration_ms: 0.2 }),
    line("spawn", { cmd: "dmsetup", args: ["message", "p", "0", "create_thin 1"], ms: 30 }),
    line("spawn", { cmd: "dmsetup", args: ["create", "d"], ms: 40 }),
    line("snapshot operation", { op: "prepare", key: "ns/1/k", spawns: 2, ms: 71 }),
    line("rpc", { method: "Prepare", key: "ns/1/k", code: "OK", duration_ms: 72.5 }),
    line("rpc", { method: "Stat", key: "bench-mark-1", code: "NOT_FOUND", duration_ms: 0.2 }),
    line("snapshot operation", { op: "stat", key: "ns/2/v", spawns: 0, ms: 0.3 }),
    line("rpc", { method: "Stat", key: "ns/2/v", code: "OK", duration_ms: 1 }),
    line("rpc", { method: "Stat", key: "ns/3/v", code: "OK", duration_ms: 1.5 }),
    line("rpc", { method: "Stat", key: "bench-mark-2", code: "NOT_FOUND", duration_ms: 0.2 }),
  ].join("\n");
  const segments = segmentByMarkers(parseLog(text));
  assert.deepEqual([...segments.keys()], [0, 1, 2]);
  assert.deepEqual(summarize(segments.get(0)!), {
    rpcs: 1,
    handlerMs: 72.5,
    opMs: 71,
    spawns: 2,
    methods: "Prepare",
    tracedSpawns: 2,
    spawnMs: 70,
    commands: "dmsetup message,dmsetup create",
  });
  const second = summarize(segments.get(1)!);
  assert.equal(second.methods, "Stat×2");
  assert.equal(second.handlerMs, 2.5);
  assert.equal(second.spawns, 0);
  assert.equal(summarize(segments.get(2)!).rpcs, 0);
});
