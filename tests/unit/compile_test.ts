/**
 * `deno task compile` as the README runs it, against a stand-in `denort` (the real one cannot be
 * downloaded here): the task's own command line must compile, embed the program and its
 * dependencies, and nothing else. The development Deno under `tools/deno/node_modules` (about
 * 100 MB) once ended up inside the binary because `deno compile` embeds every `node_modules`
 * directory it finds beside the config.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

/** The compile task's argv after `deno`, with `--output` pointed at `output`. */
async function compileArgs(output: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${ROOT}deno.json`));
  const words = String(config.tasks.compile).trim().split(/\s+/);
  assert.equal(words[0], "deno", `the compile task runs deno: ${config.tasks.compile}`);
  const at = words.indexOf("--output");
  assert.ok(at > 0, "the compile task names its --output");
  words[at + 1] = output;
  return words.slice(1);
}

/** The JSON object that starts at `marker` in `text`, read up to its matching brace. */
function jsonAt(text: string, marker: string): Record<string, unknown> {
  const start = text.indexOf(marker);
  assert.ok(start >= 0, `the binary holds ${marker}`);
  let depth = 0;
  let inString = false;
  for (let i = start; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === "{") depth++;
    else if (c === "}" && --depth === 0) return JSON.parse(text.slice(start, i + 1));
  }
  throw new Error(`unterminated JSON at ${marker}`);
}

Deno.test({
  name: "compile task: builds one binary embedding the program, its npm packages and no dev tools",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "dmsnap-compile-" });
    try {
      const denort = `${dir}/denort`;
      await Deno.copyFile("/bin/true", denort);
      const output = `${dir}/devmapper-snapshotter`;
      const run = await new Deno.Command(Deno.execPath(), {
        args: await compileArgs(output),
        cwd: ROOT,
        env: { DENORT_BIN: denort, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const log = new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
      // deno compile parses bintrees' extension-less test data (100,000 numbers, one per line:
      // one subtraction 100,000 deep) and overflows its stack: the task excludes that folder
      assert.doesNotMatch(log, /overflowed its stack/, "the compile task excludes bintrees/test");
      assert.equal(run.code, 0, log);
      assert.doesNotMatch(log, /tools\/deno/, "the development Deno is not embedded");
      // modules loaded by a dynamic import are embedded too (grpc-js only loads when chosen), and
      // the ioctl thread's and the List filters' workers, which deno compile does not find on
      // its own
      const embedded = embeddedPaths(log);
      const modules = [
        "src/server/native/server.ts",
        "src/server/grpc_js.ts",
        "src/dm/ioctl/ioctl.ts",
        "src/dm/dmsetup/dmsetup.ts",
        "src/dm/ioctl/worker.ts",
        "src/server/list_match_worker.ts",
        "src/metrics/metrics.ts",
        "src/metrics/endpoint.ts",
        "src/dm/instrumented.ts",
      ];
      for (const module of modules) {
        assert.ok(embedded.has(module), `${module} embedded\n${log}`);
      }

      const payload = (await Deno.stat(output)).size - (await Deno.stat(denort)).size;
      assert.ok(
        payload > 1e6 && payload < 40e6,
        `the embedded program is ${(payload / 1e6).toFixed(1)} MB\n${log}`,
      );
      const text = new TextDecoder("latin1").decode(await Deno.readFile(output));
      assert.ok(text.includes("package containerd.services.snapshots.v1"), "protos embedded");
      assert.ok(text.includes('"n":"smol-toml"'), "npm packages embedded");
      assert.ok(text.includes('"n":"re2js"'), "re2js (the ~= filters' RE2) embedded");
      assert.ok(text.includes('"n":"prom-client"'), "prom-client (the metrics) embedded");
      // and its dependencies, which its histograms and summaries load
      for (const dependency of ["tdigest", "bintrees", "@opentelemetry"]) {
        assert.ok(text.includes(`"n":"${dependency}"`), `${dependency} embedded`);
      }

      const metadata = jsonAt(text, '{"argv":');
      const permissions = metadata.permissions as Record<string, unknown>;
      for (const kind of ["read", "write", "run", "env", "ffi", "sys", "net"]) {
        assert.deepEqual(permissions[`allow_${kind}`], [], `--allow-${kind}`);
      }
      assert.deepEqual(permissions.deny_import, [], "no remote imports at run time");
      assert.equal(permissions.prompt, false, "a daemon never prompts for a permission");
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});

/**
 * The file paths in `deno compile`'s "Embedded Files" tree: each line is a name (or a collapsed
 * `dir/name` chain) with its size, indented two columns per level (four for the first) below the binary's name.
 */
function embeddedPaths(log: string): Set<string> {
  const paths = new Set<string>();
  const stack: string[] = [];
  for (const line of log.split("\n")) {
    const m = /^([│├└─┬ ]+)(\S.*) \([\d.]+[KMG]?B\)$/.exec(line);
    if (!m) continue;
    const depth = (m[1].length - 4) / 2;
    stack.length = depth;
    stack.push(m[2]);
    paths.add(stack.join("/"));
  }
  return paths;
}
