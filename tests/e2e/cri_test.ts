/**
 * The Kubernetes node path: containerd 1.6's CRI plugin configured with
 * `snapshotter = "dmsnap"` (our proxy) runs a host-network pod driven by a CRI client, the way
 * kubelet would; then a containerd whose CRI plugin uses the built-in devmapper runs the same
 * steps, and the two outcomes are compared.
 */
import assert from "node:assert/strict";
import { requireKernel, thinDevicesOn } from "../kernel/fixtures.ts";
import { poll } from "../../testing/poll.ts";
import { connectSnapshots } from "../../testing/snapshots_client.ts";
import { BUILTIN_SNAPSHOTTER, PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { buildTestImage, type TestImage } from "./image.ts";
import { requireServerEntryPoint } from "./snapshotter_server.ts";
import { connectCri, type CriClient } from "./cri/client.ts";
import { CRI_PLUGIN, criPluginSettings } from "./cri/config.ts";
import { buildPauseImage, type PauseImage } from "./cri/pause_image.ts";
import {
  assertCriOutcome,
  criParityView,
  type CriScenarioResult,
  runCriScenario,
} from "./cri/scenario.ts";

/**
 * Waits until containerd's CRI plugin answers `runtime.v1` (it starts after the socket is up);
 * returns "<runtime> <version> (CRI <api version>)".
 */
async function waitForCri(cri: CriClient): Promise<string> {
  let last = "";
  const v = await poll(
    () =>
      cri.version().then(
        (v) => v.runtime_api_version === "" ? undefined : v,
        (err) => {
          last = (err as Error).message;
          return undefined;
        },
      ),
    "containerd's CRI plugin to serve runtime.v1",
    { timeoutMs: 30_000, intervalMs: 200, detail: () => last },
  );
  return `${v.runtime_name} ${v.runtime_version} (CRI ${v.runtime_api_version})`;
}

async function runOn(
  snapshotter: string,
  files: { dir: string; image: TestImage; pause: PauseImage },
): Promise<CriScenarioResult> {
  const ours = snapshotter !== BUILTIN_SNAPSHOTTER;
  await using env = await startE2eEnv({
    proxy: ours,
    builtin: !ours,
    containerdEnablePlugins: [CRI_PLUGIN],
    containerdPluginSettings: criPluginSettings({
      snapshotter,
      sandboxImage: files.pause.ref,
      dir: `${files.dir}/${snapshotter}`,
    }),
  });
  const pool = (env.proxyPool ?? env.builtinPool)!;
  // The node setup step the README gives (the unit's ExecStartPre): CRI reports
  // <containerd root>/io.containerd.snapshotter.v1.<name> as the image file system, and kubelet
  // fails image GC while that directory is missing. containerd 1.6 makes none for a proxy
  // plugin; the built-in devmapper makes it only as its default root_path, which this
  // environment moves elsewhere.
  await Deno.mkdir(`${env.ctd.dir}/root/io.containerd.snapshotter.v1.${snapshotter}`, {
    recursive: true,
  });
  const cri = await connectCri(env.ctd.address);
  try {
    console.log(`CRI served by ${await waitForCri(cri)}`);
    const server = env.server;
    const backendKeys = server
      ? async () => {
        const client = connectSnapshots(server.socket);
        try {
          return (await client.list()).infos.map((i) => i.name);
        } finally {
          client.close();
        }
      }
      : undefined;
    const result = await runCriScenario({
      ctd: env.ctd,
      cri,
      snapshotter,
      image: files.image,
      pause: files.pause,
      dir: `${files.dir}/${snapshotter}`,
      thinIds: () => pool.thinIds(),
      activeDevices: () => thinDevicesOn(pool.name),
      backendKeys,
      log: (m) => console.log(m),
    });
    // For whoever reads a CI log: what containerd and our server complained about meanwhile.
    for (
      const [name, tail] of [["containerd", env.ctd.logTail(1 << 20)], [
        "server",
        server?.logTail(1 << 20),
      ]] as const
    ) {
      const lines = (await tail ?? "").split("\n").filter((l) => /level=(warn|error)/.test(l));
      console.log(
        `${name}: ${lines.length} warn/error lines${
          lines.length ? ":\n" + lines.slice(-10).join("\n") : ""
        }`,
      );
    }
    const { readerProbe: _p, ...verdicts } = result.outcome;
    console.log(JSON.stringify({ outcome: verdicts, measured: result.measured }));
    return result;
  } finally {
    cri.close();
  }
}

Deno.test("e2e cri: a host-network pod through containerd's CRI on our snapshotter, then the built-in devmapper, with the same outcome", async (t) => {
  requireKernel();
  await requireServerEntryPoint();
  const dir = await Deno.makeTempDir({ prefix: "e2e-cri-" });
  try {
    const image = await buildTestImage({ dir });
    const pause = await buildPauseImage({ dir });
    const files = { dir, image, pause };
    const results: Partial<Record<string, CriScenarioResult>> = {};
    await t.step(`CRI with snapshotter = "${PROXY_SNAPSHOTTER}" (ours)`, async () => {
      const ours = await runOn(PROXY_SNAPSHOTTER, files);
      results.ours = ours;
      assertCriOutcome(ours.outcome, image, pause);
      assert.equal(ours.measured.backendKeysAsAfterImport, true);
    });
    await t.step(`CRI with snapshotter = "${BUILTIN_SNAPSHOTTER}" (built-in)`, async () => {
      const builtin = await runOn(BUILTIN_SNAPSHOTTER, files);
      assertCriOutcome(builtin.outcome, image, pause);
      assert.ok(results.ours, "the run on our snapshotter did not complete");
      assert.deepEqual(criParityView(results.ours.outcome), criParityView(builtin.outcome));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
