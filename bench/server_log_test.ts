import assert from "node:assert/strict";
import { formatLine } from "../src/util/log.ts";
import { attributeByTime, parseLog, parseLogLine, summarize } from "./server_log.ts";

const line = (ms: number, msg: string, fields: Record<string, unknown>) =>
  formatLine("debug", msg, fields, new Date(ms));

Deno.test("parseLogLine reads bare and quoted values as the server writes them", () => {
  const e = parseLogLine(
    line(0, "spawn", { cmd: "dmsetup", args: ["message", "pool x", "0"], code: 0, ms: 12.5 }),
  );
  assert.equal(e?.msg, "spawn");
  assert.equal(e?.cmd, "dmsetup");
  assert.deepEqual(JSON.parse(e!.args), ["message", "pool x", "0"]);
  assert.equal(e?.ms, "12.5");
  assert.equal(e?.time, "1970-01-01T00:00:00.000Z");
  assert.equal(parseLogLine("Listening on /run/x.sock"), null);
});

Deno.test("attributeByTime: earliest window containing the line; the rest is outside", () => {
  const text = [
    line(995, "rpc", { method: "List", key: "", duration_ms: 3 }),
    line(1002, "spawn", { cmd: "dmsetup", args: ["message", "p", "0", "create_thin 1"], ms: 30 }),
    line(1040, "spawn", { cmd: "dmsetup", args: ["create", "d"], ms: 40 }),
    line(1041, "snapshot operation", { op: "prepare", key: "ns/1/k", spawns: 2, ms: 71 }),
    line(1042, "rpc", { method: "Prepare", key: "ns/1/k", code: "OK", duration_ms: 72.5 }),
    // 1042 is both the first window's end and the second's start: it is the first's.
    line(1045, "rpc", { method: "Stat", key: "ns/2/v", code: "OK", duration_ms: 1 }),
    line(1046, "snapshot operation", { op: "mkfs", spawns: 1, ms: 5 }),
    line(1047, "rpc", { method: "Stat", key: "ns/3/v", code: "OK", duration_ms: 1.5 }),
    line(2000, "rpc", { method: "Remove", key: "ns/3/v", code: "OK", duration_ms: 9 }),
  ].join("\n");
  const { perWindow, outside } = attributeByTime(parseLog(text), [
    { start: 1000, end: 1042 },
    { start: 1042, end: 1047 },
    { start: 1500, end: 1600 },
  ]);
  assert.deepEqual(summarize(perWindow[0]), {
    rpcs: 1,
    handlerMs: 72.5,
    opMs: 71,
    spawns: 2,
    methods: "Prepare",
    tracedSpawns: 2,
    spawnMs: 70,
    commands: "dmsetup message,dmsetup create",
  });
  const second = summarize(perWindow[1]);
  assert.equal(second.methods, "Stat×2");
  assert.equal(second.handlerMs, 2.5);
  assert.equal(second.spawns, 1);
  assert.equal(perWindow[2].length, 0);
  assert.deepEqual(outside.map((e) => e.method), ["List", "Remove"]);
});
