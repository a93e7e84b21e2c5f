/**
 * Checks the CRI test's pure parts: the containerd config it writes (the README's Kubernetes
 * line, the CRI plugin enabled, CNI kept off the host), the `ctr snapshots usage` parser, the
 * pause image's layout and the reduced CRI proto. Needs no kernel: runs on the host
 * (`deno test -A tests/e2e/cri/`) and in the guest.
 */
import assert from "node:assert/strict";
import { parse } from "smol-toml";
import { poll } from "../../../testing/poll.ts";
import { containerdConfig, DISABLED_PLUGINS } from "../containerd.ts";
import { CRI_PACKAGE, loadCriProto } from "./client.ts";
import { CRI_PLUGIN, criPluginSettings } from "./config.ts";
import { buildPauseImage, PAUSE_IMAGE_REF, PAUSE_SCRIPT } from "./pause_image.ts";
import { parseUsageList, podConfig } from "./scenario.ts";

type Table = Record<string, unknown>;

Deno.test("e2e cri harness: containerd config enables CRI with the snapshotter the README names", () => {
  assert.ok(DISABLED_PLUGINS.includes(CRI_PLUGIN), "the other e2e tests keep CRI off");
  const text = containerdConfig({
    dir: "/run/ctd-x",
    address: "/run/ctd-x/containerd.sock",
    proxySnapshotters: { dmsnap: "/run/x/snap.sock" },
    enablePlugins: [CRI_PLUGIN],
    pluginSettings: criPluginSettings({
      snapshotter: "dmsnap",
      sandboxImage: PAUSE_IMAGE_REF,
      dir: "/tmp/cri-x",
    }),
  });
  // The README's line for Kubernetes users, as containerd reads it.
  assert.match(
    text,
    /^\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\]\nsnapshotter = "dmsnap"$/m,
  );
  const config = parse(text) as Table;
  const disabled = config.disabled_plugins as string[];
  assert.ok(!disabled.includes(CRI_PLUGIN));
  assert.deepEqual(disabled, [
    ...DISABLED_PLUGINS.filter((id) => id !== CRI_PLUGIN),
    "io.containerd.snapshotter.v1.devmapper",
  ]);
  const cri = (config.plugins as Table)[CRI_PLUGIN] as Table;
  assert.equal(cri.sandbox_image, PAUSE_IMAGE_REF);
  assert.equal(cri.stats_collect_period, 1);
  assert.deepEqual({ ...(cri.containerd as Table) }, { snapshotter: "dmsnap" });
  assert.deepEqual({ ...(cri.cni as Table) }, {
    bin_dir: "/tmp/cri-x/cni/bin",
    conf_dir: "/tmp/cri-x/cni/net.d",
  });
});

Deno.test("e2e cri harness: ctr snapshots usage -b output parse", () => {
  const out = "KEY                 SIZE     INODES \n" +
    "sha256:abc          1234     0      \n" +
    "0123456789abcdef    12648448 0      \n";
  assert.deepEqual(parseUsageList(out), { "sha256:abc": 1234, "0123456789abcdef": 12648448 });
  assert.deepEqual(parseUsageList("KEY SIZE INODES\n"), {});
});

Deno.test("e2e cri harness: the pause image names itself and waits for a stop signal", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cri-pause-" });
  try {
    const pause = await buildPauseImage({ dir });
    assert.equal(pause.ref, PAUSE_IMAGE_REF);
    const out = await new Deno.Command("tar", {
      args: ["-xf", pause.archive, "-C", dir],
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const blob = (digest: string) =>
      Deno.readTextFile(`${dir}/blobs/sha256/${digest.slice("sha256:".length)}`);
    const index = JSON.parse(await Deno.readTextFile(`${dir}/index.json`));
    assert.equal(index.manifests[0].annotations["io.containerd.image.name"], PAUSE_IMAGE_REF);
    const manifest = JSON.parse(await blob(index.manifests[0].digest));
    assert.equal(manifest.layers.length, pause.layers);
    const config = JSON.parse(await blob(manifest.config.digest));
    assert.deepEqual(config.config.Entrypoint, ["/bin/sh", "-c", PAUSE_SCRIPT]);
    // The script exits 0 on SIGTERM (run here with the host's shell): once it has started
    // its first sleep, its trap is set.
    const child = new Deno.Command("/bin/sh", { args: ["-c", PAUSE_SCRIPT] }).spawn();
    const children = `/proc/${child.pid}/task/${child.pid}/children`;
    await poll(async () => (await Deno.readTextFile(children)).trim() !== "", "the first sleep");
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e cri harness: a host-network pod request encodes NODE at the CRI field numbers", async () => {
  const root = await loadCriProto();
  const type = root.lookupType(`${CRI_PACKAGE}.RunPodSandboxRequest`);
  const bytes = type.encode(type.fromObject({ config: podConfig("p", "/logs") })).finish();
  const decoded = type.toObject(type.decode(bytes), { enums: String });
  assert.equal(decoded.config.linux.security_context.namespace_options.network, "NODE");
  // config = 1, linux = 8, security_context = 2, namespace_options = 1, network = 1 (NODE = 2):
  // the innermost bytes are tag 0x08 (field 1, varint) followed by 2.
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  assert.match(hex, /^0a..(?:..)*42..12..0a..0802/);
  assert.ok(root.lookupService(`${CRI_PACKAGE}.RuntimeService`).methods.ExecSync);
  assert.ok(root.lookupService(`${CRI_PACKAGE}.ImageService`).methods.ImageFsInfo);
});
