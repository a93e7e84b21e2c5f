import assert from "node:assert/strict";
import {
  parseCpuTicks,
  parseProcIo,
  parseVmRssKib,
  readCpuTicks,
  readProcIo,
  readRssKib,
  ticksToMs,
} from "./proc_stats.ts";

Deno.test("parseCpuTicks: utime+stime and cutime+cstime, a command name with spaces", () => {
  const stat = "4242 (deno (main) x) S 1 4242 4242 0 -1 4194560 12345 0 7 0 " +
    "150 25 3 4 20 0 12 0 98765 1234567 890";
  assert.deepEqual(parseCpuTicks(stat), { self: 175, children: 7 });
  assert.throws(() => parseCpuTicks("garbage"), /no "\)"/);
  assert.throws(() => parseCpuTicks("1 (x) S 1 2"), /no CPU times/);
  assert.equal(ticksToMs(175), 1750);
});

Deno.test("parseVmRssKib and parseProcIo", () => {
  assert.equal(parseVmRssKib("Name:\tdeno\nVmRSS:\t   76308 kB\nVmData: 1 kB\n"), 76308);
  assert.throws(() => parseVmRssKib("Name:\tkthreadd\n"), /no VmRSS/);
  assert.deepEqual(
    parseProcIo("rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\nwrite_bytes: 4096\n"),
    { rchar: 10, wchar: 20, syscr: 3, syscw: 4, write_bytes: 4096 },
  );
});

Deno.test("the readers read this process", async () => {
  assert.ok((await readRssKib(Deno.pid)) > 1000);
  const cpu = await readCpuTicks(Deno.pid);
  assert.ok(cpu.self >= 0 && cpu.children >= 0);
  const file = await Deno.makeTempFile();
  const before = (await readProcIo(Deno.pid)).syscw;
  await Deno.writeTextFile(file, "x");
  assert.ok((await readProcIo(Deno.pid)).syscw > before);
  await Deno.remove(file);
});
