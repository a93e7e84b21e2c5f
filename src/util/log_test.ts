import assert from "node:assert/strict";
import { createLogger, formatJsonLine, formatLine, isLogFormat } from "./log.ts";

Deno.test("lines below the level are dropped; fields and with() fields are kept", () => {
  const lines: string[] = [];
  const log = createLogger({ level: "info", write: (l) => lines.push(l), fields: { a: 1 } });
  log.debug("hidden");
  log.with({ b: "x y" }).info("shown", { c: true });
  assert.equal(lines.length, 1);
  assert.match(lines[0], /level=info msg="shown" a=1 b="x y" c=true$/);
  assert.equal(log.enabled("debug"), false);
  assert.equal(log.enabled("warn"), true);
});

Deno.test("formatLine quotes values with spaces and shows error messages", () => {
  const line = formatLine(
    "warn",
    "m",
    { e: new Error("bad thing"), n: 3, u: undefined },
    new Date(0),
  );
  assert.equal(line, 'time=1970-01-01T00:00:00.000Z level=warn msg="m" e="bad thing" n=3');
});

Deno.test("stderr: debug lines are batched after the current task, info flushes at once", async () => {
  const script = `
    import { createLogger } from ${JSON.stringify(new URL("./log.ts", import.meta.url).href)};
    const log = createLogger({ level: "debug" });
    log.debug("first");
    log.debug("second");
    console.error("marker");          // written synchronously, before the batched lines
    await new Promise((r) => setTimeout(r, 20));
    log.debug("third");
    log.info("urgent");               // flushes "third" and itself at once
    console.error("after-info");
    log.debug("last");                // written when the process unloads
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  const order = new TextDecoder().decode(out.stderr).trim().split("\n").map((l) =>
    l.match(/msg="(\w+)"/)?.[1] ?? l
  );
  assert.deepEqual(order, ["marker", "first", "second", "third", "urgent", "after-info", "last"]);
});

Deno.test("stderr: batched debug lines are not lost when an error goes uncaught", async () => {
  const script = `
    import { createLogger } from ${JSON.stringify(new URL("./log.ts", import.meta.url).href)};
    createLogger({ level: "debug" }).debug("pending");
    throw new Error("boom");
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    stderr: "piped",
  }).output();
  assert.equal(out.success, false);
  assert.match(new TextDecoder().decode(out.stderr), /msg="pending"/);
});

/** Parses a logfmt line into its keys and values (values unquoted as JSON strings). */
function parseLogfmt(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s]*)/g;
  for (const m of line.matchAll(re)) out[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
  return out;
}

Deno.test("json and logfmt lines carry the same fields: time, level, msg, then the fields", () => {
  const fields = {
    pool: "p",
    n: 3,
    ok: true,
    e: new Error("bad thing"),
    u: undefined,
    obj: { a: 1 },
  };
  const now = new Date(0);
  const json = JSON.parse(formatJsonLine("warn", "m", fields, now));
  const logfmt = parseLogfmt(formatLine("warn", "m", fields, now));
  assert.deepEqual(Object.keys(json), ["time", "level", "msg", "pool", "n", "ok", "e", "obj"]);
  assert.deepEqual(Object.keys(logfmt), Object.keys(json));
  assert.deepEqual(json, {
    time: "1970-01-01T00:00:00.000Z",
    level: "warn",
    msg: "m",
    pool: "p",
    n: 3,
    ok: true,
    e: "bad thing",
    obj: { a: 1 },
  });
  for (const [k, v] of Object.entries(json)) {
    assert.equal(logfmt[k], typeof v === "string" ? v : JSON.stringify(v), k);
  }
});

Deno.test("json lines: special characters survive, one object per line, never a newline", () => {
  const nasty =
    'a "quoted" value\nwith a newline, a\ttab, back\\slash, = sign, ünïcödé, \u0000 nul';
  const lines: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l) });
  log.with({ component: "grpc" }).debug(nasty, { key: nasty, [nasty]: 1 });
  log.error("failed", { error: new Error(`Cannot open pool "x": ${nasty}`) });
  assert.equal(lines.length, 2);
  for (const line of lines) assert.ok(!/[\n\r]/.test(line), line);
  const first = JSON.parse(lines[0]);
  assert.equal(first.level, "debug");
  assert.equal(first.msg, nasty);
  assert.equal(first.component, "grpc");
  assert.equal(first.key, nasty);
  assert.equal(first[nasty], 1);
  assert.equal(JSON.parse(lines[1]).error, `Cannot open pool "x": ${nasty}`);
  // logfmt keeps the value on one line too
  const logfmt = formatLine("info", nasty, { key: nasty }, new Date(0));
  assert.ok(!/[\n\r]/.test(logfmt));
  assert.equal(parseLogfmt(logfmt).key, nasty);
});

Deno.test("json lines: fields named time, level or msg do not overwrite the line's own", () => {
  const json = JSON.parse(
    formatJsonLine(
      "info",
      "m",
      { time: "t", level: "l", msg: "x", "fields.msg": "y" },
      new Date(0),
    ),
  );
  assert.equal(json.time, "1970-01-01T00:00:00.000Z");
  assert.equal(json.level, "info");
  assert.equal(json.msg, "m");
  assert.equal(json["fields.time"], "t");
  assert.equal(json["fields.level"], "l");
  assert.equal(json["fields.msg"], "x");
  assert.equal(json["fields.fields.msg"], "y");
});

Deno.test("values JSON cannot hold (bigint, cycles, NaN) are written as text in both formats", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  const fields = { big: 12345678901234567890n, cyclic, nan: NaN };
  const json = JSON.parse(formatJsonLine("info", "m", fields, new Date(0)));
  assert.deepEqual(json.big, "12345678901234567890");
  assert.equal(json.cyclic, "[object Object]");
  assert.equal(json.nan, "NaN");
  const logfmt = parseLogfmt(formatLine("info", "m", fields, new Date(0)));
  assert.equal(logfmt.big, "12345678901234567890");
  assert.equal(logfmt.nan, "NaN");
});

Deno.test("createLogger: logfmt by default, json when asked, kept by with()", () => {
  const lines: string[] = [];
  createLogger({ write: (l) => lines.push(l) }).info("a", { k: 1 });
  createLogger({ format: "json", write: (l) => lines.push(l) }).with({ c: "x" }).info("b");
  assert.match(lines[0], /^time=\S+ level=info msg="a" k=1$/);
  assert.deepEqual(Object.keys(JSON.parse(lines[1])), ["time", "level", "msg", "c"]);
  assert.equal(isLogFormat("json"), true);
  assert.equal(isLogFormat("text"), false);
});
