import assert from "node:assert/strict";
import { memorySnapshotter } from "../../testing/memory_snapshotter.ts";
import { type CliOptions, runCli } from "./cli.ts";

interface Run {
  code: number;
  out: string;
  err: string;
  logs: string[];
}

async function run(args: string[], o: CliOptions = {}): Promise<Run> {
  let out = "";
  let err = "";
  const logs: string[] = [];
  const code = await runCli(args, {
    defaultConfigPath: "/nonexistent/devmapper-snapshotter.toml",
    stdout: (t) => (out += t),
    stderr: (t) => (err += t),
    logWrite: (line) => logs.push(line),
    signals: [],
    ...o,
  });
  return { code, out, err, logs };
}

/** Each line as its JSON object; fails unless every line is one object with time, level, msg. */
function jsonLines(lines: string[]): Record<string, unknown>[] {
  assert.ok(lines.length > 0, "no log lines");
  return lines.map((line) => {
    const obj = JSON.parse(line);
    assert.equal(typeof obj, "object", line);
    assert.deepEqual(Object.keys(obj).slice(0, 3), ["time", "level", "msg"], line);
    return obj;
  });
}

async function serveOnce(dir: string, args: string[]): Promise<Run> {
  const stop = new AbortController();
  return await run(
    ["serve", "--pool-name", "p", "--root-path", dir, "--address", `${dir}/s.sock`, ...args],
    {
      openSnapshotter: (_config, logger) => {
        logger.with({ component: "snapshotter" }).warn("opened", { error: new Error('x="y"') });
        return Promise.resolve(memorySnapshotter());
      },
      stop: stop.signal,
      onListening: () => stop.abort(),
    },
  );
}

Deno.test("serve: log_format = json (file or --log-format) makes every log line a JSON object", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-logfmt-" });
  try {
    const file = `${dir}/config.toml`;
    await Deno.writeTextFile(file, 'log_format = "json"\n');
    for (const args of [["--config", file], ["--log-format", "json"]]) {
      const r = await serveOnce(dir, args);
      assert.equal(r.code, 0, r.err);
      const lines = jsonLines(r.logs);
      const starting = lines.find((l) => l.msg === "starting");
      assert.ok(starting, r.logs.join("\n"));
      assert.equal(starting.level, "info");
      assert.equal(starting.pool, "p");
      const opened = lines.find((l) => l.msg === "opened");
      assert.deepEqual(
        { ...opened, time: undefined },
        { time: undefined, level: "warn", msg: "opened", component: "snapshotter", error: 'x="y"' },
        "the snapshotter's logger writes JSON with its fields, the error as its message",
      );
    }
    // without it: logfmt, as before
    const plain = await serveOnce(dir, []);
    assert.equal(plain.code, 0, plain.err);
    assert.match(plain.logs[0], /^time=\S+ level=info msg="starting" /);
    // the flag overrides the file
    const back = await serveOnce(dir, ["--config", file, "--log-format", "logfmt"]);
    assert.ok(back.logs.every((l) => l.startsWith("time=")), back.logs.join("\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("log_format: an unknown format is refused with the accepted ones", async () => {
  const flag = await run(["serve", "--pool-name", "p", "--log-format", "text"]);
  assert.equal(flag.code, 2);
  assert.match(flag.err, /--log-format: unknown log format "text" \(use logfmt, json\)/);
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-logfmt-" });
  try {
    await Deno.writeTextFile(`${dir}/c.toml`, 'pool_name = "p"\nlog_format = "JSON"\n');
    const file = await run(["config", "check", "--config", `${dir}/c.toml`]);
    assert.equal(file.code, 1);
    assert.match(file.err, /c\.toml: log_format: unknown log format "JSON" \(use logfmt, json\)/);
    const ok = await run(["config", "check", "--pool-name", "p", "--log-format", "json"]);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /^log_format = "json"$/m);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pool commands write JSON log lines with --log-format json", async () => {
  const missing = `dmsnap-logfmt-missing-${Date.now()}`;
  const r = await run([
    "pool",
    "status",
    "--name",
    missing,
    "--log-level",
    "trace",
    "--log-format",
    "json",
  ]);
  assert.equal(r.code, 1, "no such pool on this host");
  const lines = jsonLines(r.logs);
  // every spawn is traced (or its failure, where dmsetup is not installed)
  assert.ok(lines.some((l) => l.level === "trace"), r.logs.join("\n"));
  const plain = await run(["pool", "status", "--name", missing, "--log-level", "trace"]);
  assert.ok(plain.logs.length > 0 && plain.logs.every((l) => l.startsWith("time=")));
  const bad = await run(["pool", "status", "--log-format", "xml"]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /pool status: --log-format: unknown log format "xml" \(use logfmt, json\)/);
});
