import assert from "node:assert/strict";
import { resolveConfig } from "../config/config.ts";
import { parseConfigToml } from "../config/load.ts";
import type { Snapshotter } from "../snapshots/types.ts";
import { memorySnapshotter } from "../../testing/memory_snapshotter.ts";
import { connectSnapshots } from "../../testing/snapshots_client.ts";
import { bindNotifyReceiver } from "../../testing/notify_receiver.ts";
import { poll } from "../../testing/poll.ts";
import { type CliOptions, runCli, VERSION } from "./cli.ts";
import { defaultMetaSize } from "./pool_cmd.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

interface Run {
  code: number;
  out: string;
  err: string;
}

async function run(args: string[], o: CliOptions = {}): Promise<Run> {
  let out = "";
  let err = "";
  const code = await runCli(args, {
    defaultConfigPath: "/nonexistent/devmapper-snapshotter.toml",
    stdout: (t) => (out += t),
    stderr: (t) => (err += t),
    logWrite: () => {},
    signals: [],
    ...o,
  });
  return { code, out, err };
}

async function usageError(args: string[], message: RegExp): Promise<void> {
  const r = await run(args);
  assert.equal(r.code, 2, `${args.join(" ")}: ${r.err}`);
  assert.equal(r.out, "");
  const lines = r.err.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line expected: ${r.err}`);
  assert.match(lines[0], /^devmapper-snapshotter: /);
  assert.match(lines[0], message);
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-cli-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("unknown commands and flags exit 2 with a one-line reason", async () => {
  await usageError(["frobnicate"], /unknown command 'frobnicate'/);
  await usageError(["serve", "--bogus"], /serve: unknown option '--bogus'/);
  await usageError(["--bogus"], /serve: unknown option '--bogus'/);
  await usageError(["serve", "--address"], /serve: option '--address <value>' argument missing/);
  await usageError(["serve", "extra"], /serve: unexpected argument 'extra'/);
  await usageError(["serve", "--no-address"], /unknown option '--no-address'/);
  await usageError(["config"], /config: missing command/);
  await usageError(["config", "edit"], /config: unknown command 'edit'/);
  await usageError(["config", "default", "--x"], /config default: unknown option '--x'/);
  await usageError(["config", "check", "--pool-name"], /argument missing/);
  await usageError(["pool"], /pool: missing command/);
  await usageError(["pool", "grow"], /pool: unknown command 'grow'/);
  await usageError(["pool", "create", "--size", "1G"], /pool create: unknown option '--size'/);
  await usageError(["pool", "status", "x"], /pool status: unexpected argument 'x'/);
  await usageError(["pool", "destroy", "--force=yes"], /pool destroy: /);
  await usageError(["version", "--short"], /version: unknown option '--short'/);
});

Deno.test("bad flag values exit 2 naming the flag", async () => {
  await usageError(
    ["serve", "--pool-name", "p", "--log-level", "loud"],
    /--log-level: unknown level/,
  );
  await usageError(
    ["config", "check", "--pool-name", "p", "--base-image-size", "10x"],
    /--base-image-size: failed to parse base image size '10x': invalid suffix/,
  );
  await usageError(["serve", "--pool-name", "p", "--fs-type", "zfs"], /--fs-type: unsupported/);
  await usageError(["serve", "--pool-name", "a/b"], /--pool-name: Invalid device-mapper name/);
  await usageError(["serve", "--pool-name", "p", "--address", "tcp://x:1"], /--address: .*unix/);
  await usageError(
    ["serve", "--pool-name", "p", "--log-level", "x", "--fs-type", "y"],
    /--fs-type: .*; --log-level: /,
  );
  await usageError(["pool", "create", "--data-size", "lots"], /--data-size: invalid size: 'lots'/);
  await usageError(["pool", "create", "--meta-size", "1q"], /--meta-size: invalid suffix/);
  await usageError(["pool", "create", "--block-size", "1000"], /--block-size: 1000 bytes/);
});

Deno.test("--help works for every command and exits 0", async () => {
  for (
    const args of [
      ["--help"],
      ["-h"],
      ["help"],
      ["help", "serve"],
      ["serve", "--help"],
      ["serve", "-h"],
      ["config", "--help"],
      ["config", "check", "--help"],
      ["config", "default", "--help"],
      ["pool", "--help"],
      ["pool", "create", "--help"],
      ["pool", "status", "-h"],
      ["pool", "destroy", "--help"],
      ["version", "--help"],
    ]
  ) {
    const r = await run(args);
    assert.equal(r.code, 0, args.join(" "));
    assert.match(r.out, /^Usage: devmapper-snapshotter/, args.join(" "));
    assert.equal(r.err, "");
  }
  const serveHelp = (await run(["serve", "--help"])).out;
  for (const flag of ["--config", "--address", "--pool-name", "--[no-]async-remove"]) {
    assert.ok(serveHelp.includes(flag), flag);
  }
  // the plugin name of README.md and deploy/containerd-proxy-plugin.toml
  const deployed = await Deno.readTextFile(`${ROOT}deploy/containerd-proxy-plugin.toml`);
  const plugin = /^\[proxy_plugins\.([\w-]+)\]$/m.exec(deployed)?.[1];
  assert.equal(plugin, "dmsnap");
  assert.ok(serveHelp.includes(`[proxy_plugins.${plugin}] type = "snapshot"`), serveHelp);
  assert.ok((await run(["pool", "--help"])).out.includes("--log-level LEVEL"));
});

Deno.test("version prints the deno.json version", async () => {
  const r = await run(["version"]);
  assert.equal(r.code, 0);
  assert.equal(r.out, `devmapper-snapshotter ${VERSION} (deno ${Deno.version.deno})\n`);
  assert.match(VERSION, /^\d+\.\d+\.\d+/);
  assert.equal((await run(["--version"])).out, r.out);
});

Deno.test("config default prints a file that parses and validates", async () => {
  const r = await run(["config", "default"]);
  assert.equal(r.code, 0);
  const config = resolveConfig([{ source: "out", values: parseConfigToml(r.out, "out") }]);
  assert.equal(config.baseImageSize, 10 * 1024 ** 3);
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/c.toml`, r.out);
    const check = await run(["config", "check", "--config", `${dir}/c.toml`]);
    assert.equal(check.code, 0, check.err);
  });
});

Deno.test("config check: effective values with flags over file; every file problem, exit 1", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/c.toml`;
    await Deno.writeTextFile(file, 'pool_name = "filepool"\nbase_image_size = "1GB"\n');
    const ok = await run(["config", "check", "-c", file, "--base-image-size", "2GB"]);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, new RegExp(`^# effective configuration \\(file ${file} \\+ flags\\)`));
    assert.match(ok.out, /^pool_name = "filepool"$/m);
    assert.match(ok.out, /^base_image_size = "2GiB" # 2147483648 bytes$/m);
    assert.match(ok.out, /^min_free_space = "10%"$/m);
    const sized = await run(["config", "check", "-c", file, "--min-free-space", "1GB"]);
    assert.match(sized.out, /^min_free_space = "1GiB" # 1073741824 bytes$/m);
    const wrong = await run(["config", "check", "-c", file, "--min-free-space", "150%"]);
    assert.equal(wrong.code, 2);
    assert.match(wrong.err, /--min-free-space: invalid percentage: '150%' \(must be below 100%\)/);

    await Deno.writeTextFile(file, 'pool_name = ""\nfs_type = "zfs"\nextra = 1\nlog_level = "x"\n');
    const bad = await run(["config", "check", "--config", file]);
    assert.equal(bad.code, 1);
    assert.match(bad.err, /Invalid configuration \(4 problems\)/);
    for (
      const part of ['unknown key "extra"', "pool_name: is required", "fs_type:", "log_level:"]
    ) {
      assert.ok(bad.err.includes(`${file}: ${part}`), `${part} in ${bad.err}`);
    }

    const missing = await run(["config", "check", "--config", `${dir}/none.toml`]);
    assert.equal(missing.code, 1);
    assert.match(missing.err, /none\.toml: cannot read config file: no such file/);

    const nopool = await run(["config", "check"]);
    assert.equal(nopool.code, 1, "a missing default file is fine, but pool_name is required");
    assert.match(nopool.err, /no config file\): pool_name: is required/);
  });
});

Deno.test("serve runs the factory's snapshotter on the socket until stopped", async () => {
  await withDir(async (dir) => {
    const s = memorySnapshotter();
    const stop = new AbortController();
    const socket = `${dir}/sub/s.sock`;
    let seen: Parameters<NonNullable<CliOptions["onListening"]>>[0] | undefined;
    const serving = run(["serve", "--pool-name", "p", "--root-path", dir, "--address", socket], {
      openSnapshotter: (config) => {
        assert.equal(config.poolName, "p");
        assert.equal(config.address, socket);
        return Promise.resolve(s);
      },
      stop: stop.signal,
      onListening: async (server) => {
        seen = server;
        const client = connectSnapshots(socket);
        await client.prepare("via-cli");
        client.close();
        stop.abort();
      },
    });
    const r = await serving;
    assert.equal(r.code, 0, r.err);
    assert.equal(seen?.socketPath, socket);
    assert.ok(s.infos.has("via-cli"));
    assert.equal(s.isClosed(), true);
    await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
  });
});

Deno.test("serve tells systemd (NOTIFY_SOCKET) it is opening the pool, READY=1 once the socket listens, STOPPING=1", async () => {
  await withDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    using receiver = bindNotifyReceiver(`${dir}/notify`);
    const stop = new AbortController();
    const seen: string[] = [];
    Deno.env.set("NOTIFY_SOCKET", receiver.address);
    try {
      const r = await run(["serve", "--pool-name", "p", "--address", socket], {
        openSnapshotter: () => Promise.resolve(memorySnapshotter() as Snapshotter),
        stop: stop.signal,
        onListening: async () => {
          try {
            // both sent before the server reports listening
            seen.push(await receiver.next(1000), await receiver.next(1000));
          } finally {
            stop.abort();
          }
        },
      });
      assert.equal(r.code, 0, r.err);
    } finally {
      Deno.env.delete("NOTIFY_SOCKET");
    }
    assert.deepEqual(seen, ["STATUS=opening pool p", `READY=1\nSTATUS=serving on ${socket}`]);
    assert.equal(await receiver.next(), "STOPPING=1");
  });
});

Deno.test("serve: a stop signal while the snapshotter opens ends the start cleanly, never by the default action", async () => {
  await withDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const s = memorySnapshotter();
    const opening = Promise.withResolvers<Snapshotter>();
    const logs: string[] = [];
    let listening = false;
    // SIGUSR2's default action ends the process: without a handler in place, so would this test
    const serving = run(["serve", "--pool-name", "p", "--address", socket], {
      signals: ["SIGUSR2"],
      logWrite: (line) => logs.push(line),
      openSnapshotter: () => {
        Deno.kill(Deno.pid, "SIGUSR2");
        return opening.promise;
      },
      onListening: () => (listening = true),
    });
    await poll(() => logs.some((l) => l.includes("signal received")), "the signal to be logged", {
      detail: () => logs.join(""),
    });
    opening.resolve(s);
    const r = await serving;
    assert.equal(r.code, 0, r.err);
    assert.equal(listening, false, "never served");
    assert.equal(s.isClosed(), true, "the snapshotter was closed");
    await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
    assert.ok(logs.some((l) => l.includes("stopped before serving")), logs.join(""));
  });
});

Deno.test("serve: a stop requested before the socket listens closes the server at once", async () => {
  await withDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const s = memorySnapshotter();
    const stop = new AbortController();
    const r = await run(["serve", "--pool-name", "p", "--address", socket], {
      stop: stop.signal,
      openSnapshotter: () => {
        stop.abort();
        return Promise.resolve(s as Snapshotter);
      },
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(s.isClosed(), true);
    await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
  });
});

Deno.test("serve: a failing factory or a live socket exits 1 with the reason", async () => {
  await withDir(async (dir) => {
    const socket = `${dir}/s.sock`;
    const failing = await run(["serve", "--pool-name", "p", "--address", socket], {
      openSnapshotter: () => Promise.reject(new Error('Cannot open pool "p": no such device')),
    });
    assert.equal(failing.code, 1);
    assert.equal(failing.err, 'devmapper-snapshotter: Cannot open pool "p": no such device\n');
    await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);

    const listener = Deno.listen({ transport: "unix", path: socket });
    try {
      let opened = false;
      const live = await run(["serve", "--pool-name", "p", "--address", socket], {
        openSnapshotter: () => {
          opened = true;
          return Promise.resolve(memorySnapshotter() as Snapshotter);
        },
      });
      assert.equal(live.code, 1);
      assert.match(live.err, /another server is already listening/);
      assert.equal(opened, false, "the pool is not touched while another instance serves");
    } finally {
      listener.close();
    }
  });
});

Deno.test("`deno run -A main.ts serve --config FILE --address SOCKET` parses and reaches the pool", async () => {
  await withDir(async (dir) => {
    const file = `${dir}/c.toml`;
    const pool = `dmsnap-cli-missing-${Date.now()}`;
    await Deno.writeTextFile(file, `pool_name = "${pool}"\nroot_path = "${dir}/root"\n`);
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "serve", "--config", file, "--address", `${dir}/s.sock`],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(r.stderr);
    // no such pool on this host: a clear error naming it, and no socket left behind
    assert.equal(r.code, 1, err);
    assert.match(err, /level=info msg="starting"/);
    assert.ok(err.includes(pool), err);
    await assert.rejects(Deno.lstat(`${dir}/s.sock`), Deno.errors.NotFound);
  });
});

Deno.test("pool commands log at the level --log-level names", async () => {
  const missing = `dmsnap-cli-missing-${Date.now()}`;
  const status = async (...flags: string[]) => {
    const lines: string[] = [];
    const r = await run(["pool", "status", "--name", missing, ...flags], {
      logWrite: (line) => lines.push(line),
    });
    assert.equal(r.code, 1, "no such pool on this host");
    assert.ok(r.err.includes(missing), r.err);
    return lines;
  };
  // every spawn is traced (or its failure, where dmsetup is not installed)
  const traced = await status("--log-level", "trace");
  assert.ok(traced.some((l) => /level=trace msg="spawn/.test(l)), traced.join(""));
  const quiet = await status();
  assert.ok(!quiet.some((l) => /level=(trace|debug)/.test(l)), quiet.join(""));
  assert.deepEqual(await status("--log-level", "error"), []);
  await usageError(
    ["pool", "status", "--log-level", "loud"],
    /pool status: --log-level: unknown level "loud" \(use trace, debug, info, warn, error\)/,
  );
  await usageError(["pool", "destroy", "--log-level"], /pool destroy: .*argument missing/);
});

Deno.test("pool create's default metadata size is data/64 within dm-thin's limits", () => {
  assert.equal(defaultMetaSize(10 * 1024 ** 3), 160 * 1024 ** 2);
  assert.equal(defaultMetaSize(1024 ** 2), 2 * 1024 ** 2);
  assert.equal(defaultMetaSize(1024 ** 5), 16 * 1024 ** 3);
  assert.equal(defaultMetaSize(64 * 4096 + 1) % 4096, 0);
});
