import assert from "node:assert/strict";
import { createLogger, formatLine } from "./log.ts";

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
