/**
 * The demo's inside part (run by `tests/e2e/demo.ts` inside the test kernel): makes a
 * loop-backed thin-pool, starts our snapshotter server and containerd with it as proxy
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
import { type SnapshotterServer, startSnapshotterServer } from "./snapshotter_server.ts";

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
async function run(cmd: string, ...args: string[]): Promise<string> {
  console.log(`         $ ${[cmd, ...args].join(" ")}`);
  const out = await new Deno.Command(cmd, {
    args,
    env: { LC_ALL: "C", DM_DISABLE_UDEV: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr).trim();
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${stderr || stdout}`);
  }
  return stdout;
}

/** Removes thin devices still active on `pool` (only after a failure: normally none are). */
async function removeThinDevices(pool: string): Promise<void> {
  const quiet = async (cmd: string, ...args: string[]) =>
    new TextDecoder().decode(
      (await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output()).stdout,
    ).trim();
  const ref = await quiet(
    "dmsetup",
    "info",
    "-c",
    "--noheadings",
    "-o",
    "major,minor",
    "--separator",
    ":",
    pool,
  );
  for (const line of (await quiet("dmsetup", "table")).split("\n")) {
    const m = /^(\S+): \d+ \d+ thin (\S+) /.exec(line);
    if (!m || (m[2] !== ref && m[2] !== `/dev/mapper/${pool}`)) continue;
    await quiet("umount", "-l", `/dev/mapper/${m[1]}`);
    await run("dmsetup", "remove", "--retry", m[1]);
  }
}

/** Thin ids in the pool's metadata, read through a metadata snapshot (quietly). */
async function thinIds(pool: string, metaLoop: string): Promise<number[]> {
  const quiet = async (cmd: string, ...args: string[]) => {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    if (!out.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
    return new TextDecoder().decode(out.stdout).trim();
  };
  await quiet("dmsetup", "message", pool, "0", "reserve_metadata_snap");
  try {
    const out = await quiet(
      "thin_ls",
      "--no-headers",
      "--format",
      "DEV",
      "--metadata-snap",
      metaLoop,
    );
    return out.split(/\s+/).filter(Boolean).map(Number).sort((a, b) => a - b);
  } finally {
    await quiet("dmsetup", "message", pool, "0", "release_metadata_snap");
  }
}

async function ctr(ctd: Containerd, args: string[]): Promise<string> {
  console.log(`         $ ctr ${args.join(" ")}`);
  return (await ctd.ctr(args)).stdout;
}

/** `dmsetup status` of a thin-pool → used/total data and metadata blocks. */
function poolUsage(status: string, blockSectors: number): string {
  // <start> <len> thin-pool <trans id> <used meta>/<total meta> <used data>/<total data> ...
  const m = /thin-pool \d+ (\d+)\/(\d+) (\d+)\/(\d+)/.exec(status);
  if (!m) return `(unparsed status: ${status})`;
  const mib = (blocks: number, bytesPerBlock: number) =>
    (blocks * bytesPerBlock / 1024 / 1024).toFixed(1);
  const dataBlock = blockSectors * 512;
  return `data ${mib(Number(m[3]), dataBlock)} MiB used of ${
    mib(Number(m[4]), dataBlock)
  } MiB, metadata ${m[1]}/${m[2]} blocks`;
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
    const blockSectors = 128;

    step("Creating a thin-pool from two sparse files (data 512 MiB, metadata 16 MiB)");
    await run("truncate", "-s", "512M", `${dir}/data`);
    await run("truncate", "-s", "16M", `${dir}/meta`);
    const dataLoop = await run("losetup", "--find", "--show", `${dir}/data`);
    stack.defer(async () => void await run("losetup", "-d", dataLoop));
    const metaLoop = await run("losetup", "--find", "--show", `${dir}/meta`);
    stack.defer(async () => void await run("losetup", "-d", metaLoop));
    await run(
      "dmsetup",
      "create",
      pool,
      "--table",
      `0 ${
        512 * 2048
      } thin-pool ${metaLoop} ${dataLoop} ${blockSectors} 32768 1 skip_block_zeroing`,
    );
    stack.defer(async () => {
      await removeThinDevices(pool);
      await run("dmsetup", "remove", "--retry", pool);
    });
    note(`pool ${pool}: ${poolUsage(await run("dmsetup", "status", pool), blockSectors)}`);

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
    note(`${poolUsage(await run("dmsetup", "status", pool), blockSectors)}`);
    note(`thin devices in the pool (ids): ${(await thinIds(pool, metaLoop)).join(" ")}`);
    note(
      "(one per image layer" + (server ? ", one pre-formatted template for new images" : "") +
        ", and those of removed containers until containerd's next garbage collection)",
    );
    if (server) note(`our server's RSS now: ${await server.rssKib()} KiB`);

    step("Removing the image; containerd's garbage collection removes its snapshots");
    await ctr(ctd, ["images", "rm", "--sync", DEMO_IMAGE]);
    const left = await ctr(ctd, ["snapshots", "--snapshotter", snapshotter, "ls"]);
    note(left.split("\n").length <= 1 ? "no snapshots left" : left);
    note(poolUsage(await run("dmsetup", "status", pool), blockSectors));
    const idle = (await thinIds(pool, metaLoop)).length;
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
