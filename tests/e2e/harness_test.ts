/**
 * Checks the end-to-end harness's pure parts (config writers, output parsers, the image's
 * reproducible content). Needs no kernel: runs on the host and in the guest.
 */
import assert from "node:assert/strict";
import { parse } from "smol-toml";
import { containerdConfig, ContainerdError, DISABLED_PLUGINS } from "./containerd.ts";
import {
  expectedProbe,
  parseProbe,
  pseudoRandomBytes,
  sha256Hex,
  type TestImage,
} from "./image.ts";
import { parityView, parseSnapshotList, parseTaskList, type ScenarioOutcome } from "./scenario.ts";
import { serveArgs, serverConfig } from "./snapshotter_server.ts";

type Table = Record<string, unknown>;

/** A TOML table at `path` as a plain object (smol-toml returns null-prototype objects). */
function at(root: unknown, ...path: string[]): Table {
  let node = root;
  for (const key of path) node = (node as Table)[key];
  return { ...(node as Table) };
}

Deno.test("e2e harness: containerd config has devmapper, proxy and private paths", () => {
  const text = containerdConfig({
    dir: "/run/ctd-x",
    address: "/run/ctd-x/containerd.sock",
    devmapper: { poolName: "pool-a", baseImageSize: "64MB" },
    proxySnapshotters: { dmsnap: "/run/x/snap.sock" },
    pluginSettings: { "io.containerd.gc.v1.scheduler": { deletion_threshold: 5 } },
  });
  const config = at(parse(text));
  assert.equal(config.version, 2);
  assert.equal(config.root, "/run/ctd-x/root");
  assert.equal(config.state, "/run/ctd-x/state");
  assert.equal(at(config, "grpc").address, "/run/ctd-x/containerd.sock");
  assert.deepEqual(config.disabled_plugins, [...DISABLED_PLUGINS]);
  assert.deepEqual(at(config, "plugins", "io.containerd.snapshotter.v1.devmapper"), {
    pool_name: "pool-a",
    root_path: "/run/ctd-x/devmapper",
    base_image_size: "64MB",
    async_remove: false,
    discard_blocks: false,
    fs_type: "ext4",
  });
  assert.equal(at(config, "plugins", "io.containerd.gc.v1.scheduler").deletion_threshold, 5);
  assert.deepEqual(at(config, "proxy_plugins", "dmsnap"), {
    type: "snapshot",
    address: "/run/x/snap.sock",
  });
});

Deno.test("e2e harness: without devmapper settings the built-in plugin is disabled", () => {
  const config = at(parse(containerdConfig({ dir: "/d", address: "/d/s" })));
  assert.ok(
    (config.disabled_plugins as string[]).includes("io.containerd.snapshotter.v1.devmapper"),
  );
});

Deno.test("e2e harness: a proxy named devmapper is refused", () => {
  assert.throws(
    () => containerdConfig({ dir: "/d", address: "/d/s", proxySnapshotters: { devmapper: "/s" } }),
    (err) => err instanceof ContainerdError && /clashes with the built-in/.test(err.message),
  );
});

Deno.test("e2e harness: server config uses upstream key names; serve argv", () => {
  const config = at(parse(serverConfig({ poolName: "p", rootPath: "/r", baseImageSize: "64MB" })));
  assert.deepEqual(config, {
    pool_name: "p",
    root_path: "/r",
    base_image_size: "64MB",
    fs_type: "ext4",
    async_remove: false,
    discard_blocks: false,
  });
  // run as the compiled binary ships: with its V8 flags (deno.json's compile task)
  assert.deepEqual(serveArgs("/c.toml", "/s.sock"), [
    "run",
    "-A",
    "--no-check",
    "--v8-flags=--max-semi-space-size=1",
    "main.ts",
    "serve",
    "--config",
    "/c.toml",
    "--address",
    "/s.sock",
  ]);
});

Deno.test("e2e harness: ctr snapshots ls and tasks ls output parse", () => {
  const ls = [
    "KEY                 PARENT             KIND      ",
    "sha256:bbb          sha256:aaa         Committed ",
    "sha256:aaa                             Committed ",
    "c1                  sha256:bbb         Active    ",
  ].join("\n");
  assert.deepEqual(parseSnapshotList(ls), [
    { key: "c1", parent: "sha256:bbb", kind: "Active" },
    { key: "sha256:aaa", parent: "", kind: "Committed" },
    { key: "sha256:bbb", parent: "sha256:aaa", kind: "Committed" },
  ]);
  assert.deepEqual(parseSnapshotList("KEY PARENT KIND"), []);
  const tasks = "TASK    PID     STATUS    \npar1    1470    RUNNING   \npar2    1480    STOPPED";
  assert.deepEqual(parseTaskList(tasks), { par1: "RUNNING", par2: "STOPPED" });
});

Deno.test("e2e harness: probe output parse keeps values with = and trailing spaces", () => {
  assert.deepEqual(parseProbe("a=1\nopaque_dir=c \nweird=x=y\nnot a pair\n"), {
    a: "1",
    opaque_dir: "c ",
    weird: "x=y",
  });
});

Deno.test("e2e harness: big file content is reproducible and seed-dependent", async () => {
  const a = pseudoRandomBytes(4099);
  assert.equal(a.length, 4099);
  assert.deepEqual(a, pseudoRandomBytes(4099));
  assert.notDeepEqual(a, pseudoRandomBytes(4099, 7));
  assert.equal(
    await sha256Hex(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("e2e harness: parity view ignores timings, name, idle devices and output retries only", () => {
  const image = { bigFileSha256: "f", bigFileBytes: 1 } as TestImage;
  const outcome = (
    name: string,
    ms: number,
    idle: number,
    retries: string[] = [],
  ): ScenarioOutcome => ({
    snapshotter: name,
    imagesAfterImport: ["x"],
    snapshotsAfterImport: [],
    probe: expectedProbe(image),
    defaultCommand: "hi",
    writerFirstRun: "none",
    markerSeenByOther: "none",
    writerSecondRun: "w",
    parallelStatuses: [],
    parallelMarkers: [],
    imagesAfterRestart: ["x"],
    committedAfterRestart: [],
    probeAfterRestart: {},
    writerAfterRestart: "w",
    snapshotsAfterCleanup: [],
    ioRetries: retries,
    thinDevices: {
      afterImport: 3,
      withWriter: 4,
      withParallel: 6,
      afterParallel: 4,
      afterRestart: 4,
    },
    idleThinDevices: idle,
    timingsMs: { import: ms },
  });
  assert.deepEqual(parityView(outcome("a", 1, 0)), parityView(outcome("b", 2, 1, ["hello"])));
  const other = outcome("b", 2, 1);
  other.probe = { ...other.probe, deleted_file: "present" };
  assert.notDeepEqual(parityView(outcome("a", 1, 0)), parityView(other));
});
