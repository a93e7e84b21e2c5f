/**
 * The demo's inside part (run by `tests/e2e/demo.ts` inside the test kernel): makes a
 * loop-backed thin-pool with `main.ts pool create`, starts our snapshotter server and containerd with it as proxy
 * plugin, imports a small image, runs a container, shows the pool's usage and cleans up.
 *
 * `--builtin` runs the same steps with containerd's built-in devmapper snapshotter instead.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { type Containerd, removeTree, startContainerd } from "./containerd.ts";
import { BASE_IMAGE_SIZE, BUILTIN_SNAPSHOTTER, PROXY_SNAPSHOTTER } from "./environment.ts";
import { buildTestImage } from "./image.ts";
import { poolThinIds, runCommand, sh } from "../kernel/fixtures.ts";
import { REPO_ROOT, type SnapshotterServer, startSnapshotterServer } from "./snapshotter_server.ts";

const DEMO_IMAGE = "docker.io/library/dmsnap-demo:latest";
const MESSAGE = "Hello from a container whose root filesystem is a device-mapper thin device!";

const started = performance.now();

function step(text: string): void {
  const s = ((performance.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`\n[${s}s] ==> ${text}`);
}

function note(text: string): void {
  console.log(`         ${text.replaceAll("\n", "\n         ")}`);
}

/** Runs a command, echoing it first; throws with its output unless it succeeds. */
function run(cmd: string, ...args: string[]): Promise<string> {
  console.log(`         $ ${[cmd, ...args].join(" ")}`);
  return sh(cmd, ...args);
}

async function ctr(ctd: Containerd, args: string[]): Promise<string> {
  console.log(`         $ ctr ${args.join(" ")}`);
  return (await ctd.ctr(args)).stdout;
}

/** Runs this project's CLI (`deno run -A main.ts ...`), echoing the command. */
async function cli(...args: string[]): Promise<string> {
  console.log(`         $ deno run -A main.ts ${args.join(" ")}`);
  const out = await runCommand(Deno.execPath(), ["run", "-A", "main.ts", ...args], {
    cwd: REPO_ROOT,
  });
  if (out.code !== 0) {
    throw new Error(`main.ts ${args.join(" ")} failed (${out.code}): ${out.stderr || out.stdout}`);
  }
  return out.stdout;
}

/** The data and metadata lines of `main.ts pool status`. */
async function poolUsage(pool: string): Promise<string> {
  const status = await cli("pool", "status", "--name", pool);
  return status.split("\n").filter((l) => /^(data|metadata):/.test(l)).join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { builtin: { type: "boolean", default: false } },
  });
  const snapshotter = values.builtin ? BUILTIN_SNAPSHOTTER : PROXY_SNAPSHOTTER;
  const stack = new AsyncDisposableStack();
  try {
    const dir = await Deno.makeTempDir({ dir: "/run", prefix: "demo-" });
    stack.defer(() => removeTree(dir));
    const pool = `demo-pool-${crypto.randomUUID().slice(0, 6)}`;

    step("Creating a thin-pool on two sparse loop files (data 512 MiB, metadata 16 MiB)");
    note(
      await cli(
        "pool",
        "create",
        "--name",
        pool,
        "--dir",
        `${dir}/pool`,
        "--data-size",
        "512MB",
        "--meta-size",
        "16MB",
      ),
    );
    stack.defer(async () =>
      note(await cli("pool", "destroy", "--name", pool, "--dir", `${dir}/pool`, "--force"))
    );
    const metaLoop = (await run("losetup", "-j", `${dir}/pool/${pool}-meta.img`)).split(":")[0];
    note(await poolUsage(pool));

    const proxies: Record<string, string> = {};
    let server: SnapshotterServer | undefined;
    if (!values.builtin) {
      step("Starting our snapshotter server (deno run -A main.ts serve)");
      server = await startSnapshotterServer({
        dir: `${dir}/dmsnap`,
        poolName: pool,
        rootPath: `${dir}/dmsnap/root`,
        baseImageSize: BASE_IMAGE_SIZE,
      });
      stack.defer(() => server!.stop());
      note(`config ${server.configPath}:\n${(await Deno.readTextFile(server.configPath)).trim()}`);
      note(`listening on ${server.socket} (pid ${server.pid}, RSS ${await server.rssKib()} KiB)`);
      proxies[PROXY_SNAPSHOTTER] = server.socket;
    }

    step(
      values.builtin
        ? "Starting containerd with its built-in devmapper snapshotter on the pool"
        : `Starting containerd with our server as proxy snapshotter "${PROXY_SNAPSHOTTER}"`,
    );
    const ctd = await startContainerd({
      dir: `${dir}/containerd`,
      devmapper: values.builtin ? { poolName: pool, baseImageSize: BASE_IMAGE_SIZE } : undefined,
      proxySnapshotters: proxies,
      namespace: "demo",
    });
    stack.defer(() => ctd.shutdown());
    const config = await Deno.readTextFile(ctd.configPath);
    const section = values.builtin ? '[plugins."io.containerd.snapshotter.v1.devmapper"]' : (
      `[proxy_plugins.${PROXY_SNAPSHOTTER}]`
    );
    const at = config.indexOf(section);
    note(`config ${ctd.configPath} (excerpt):\n${config.slice(at, config.indexOf("\n\n", at))}`);
    const plugins = await ctr(ctd, ["plugins", "ls"]);
    note(plugins.split("\n").filter((l) => l.includes(`v1    ${snapshotter} `)).join("\n"));

    step("Building a small 3-layer image and importing it (layers are unpacked onto thin devices)");
    const image = await buildTestImage({
      dir,
      ref: DEMO_IMAGE,
      bigFileBytes: 1024 * 1024,
      message: MESSAGE,
    });
    note(
      `${image.archive}: ${image.layers} layers, manifest ${image.manifestDigest.slice(0, 19)}…`,
    );
    note(await ctr(ctd, ["images", "import", "--snapshotter", snapshotter, image.archive]));
    note(await ctr(ctd, ["snapshots", "--snapshotter", snapshotter, "ls"]));

    step("Running a container from the image");
    note(await ctr(ctd, ["run", "--rm", "--snapshotter", snapshotter, DEMO_IMAGE, "demo-hello"]));
    note(
      await ctr(ctd, [
        "run",
        "--rm",
        "--snapshotter",
        snapshotter,
        DEMO_IMAGE,
        "demo-look",
        "/bin/sh",
        "-c",
        "awk '$2==\"/\"' /proc/mounts; df -h /",
      ]),
    );

    step("Pool usage with the image unpacked");
    note(await poolUsage(pool));
    note(`thin devices in the pool (ids): ${(await poolThinIds(pool, metaLoop)).join(" ")}`);
    note(
      "(one per image layer" + (server ? ", one pre-formatted template for new images" : "") +
        ", and those of removed containers until containerd's next garbage collection)",
    );
    if (server) note(`our server's RSS now: ${await server.rssKib()} KiB`);

    step("Removing the image; containerd's garbage collection removes its snapshots");
    await ctr(ctd, ["images", "rm", "--sync", DEMO_IMAGE]);
    const left = await ctr(ctd, ["snapshots", "--snapshotter", snapshotter, "ls"]);
    note(left.split("\n").length <= 1 ? "no snapshots left" : left);
    note(await poolUsage(pool));
    const idle = (await poolThinIds(pool, metaLoop)).length;
    note(`thin devices in the pool: ${idle}${server && idle === 1 ? " (the template)" : ""}`);

    step("Shutting down: containerd, the snapshotter, the pool and the loop devices");
  } finally {
    await stack.disposeAsync();
  }
  const ls = await new Deno.Command("dmsetup", { args: ["ls"], stdout: "piped" }).output();
  const leftovers = new TextDecoder().decode(ls.stdout).split("\n").filter((l) =>
    l.startsWith("demo-")
  );
  if (leftovers.length > 0) throw new Error(`left behind: ${leftovers.join(", ")}`);
  step("Done: everything was removed again.");
}

try {
  await main();
} catch (err) {
  console.error(`\ndemo failed: ${(err as Error).message}`);
  Deno.exit(1);
}
