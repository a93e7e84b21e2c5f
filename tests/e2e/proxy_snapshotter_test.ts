/**
 * The end-to-end scenario against our snapshotter, served by `deno run -A main.ts serve` and
 * plugged into containerd as the proxy snapshotter `dmsnap`; then the same scenario with the
 * built-in devmapper snapshotter on the same containerd, and the two outcomes compared.
 */
import assert from "node:assert/strict";
import { requireKernel } from "../kernel/fixtures.ts";
import { BUILTIN_SNAPSHOTTER, PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { buildTestImage } from "./image.ts";
import {
  assertScenarioOutcome,
  parityView,
  runParityScenario,
  type ScenarioOutcome,
} from "./scenario.ts";
import { requireServerEntryPoint } from "./snapshotter_server.ts";

Deno.test("e2e: our proxy snapshotter runs the scenario with the same outcome as the built-in devmapper", async (t) => {
  requireKernel();
  await requireServerEntryPoint();
  const imageDir = await Deno.makeTempDir({ prefix: "e2e-image-" });
  try {
    const image = await buildTestImage({ dir: imageDir });
    await using env = await startE2eEnv({ builtin: true, proxy: true });
    const plugins = (await env.ctd.ctr(["plugins", "ls"])).stdout;
    assert.match(
      plugins,
      new RegExp(`io\\.containerd\\.snapshotter\\.v1\\s+${PROXY_SNAPSHOTTER}\\s.*\\sok`),
    );
    const outcomes: Record<string, ScenarioOutcome> = {};
    await t.step(`${PROXY_SNAPSHOTTER} (ours) produces the expected outcome`, async () => {
      const ours = await runParityScenario(PROXY_SNAPSHOTTER, {
        ...env.contexts[PROXY_SNAPSHOTTER],
        image,
      });
      outcomes.ours = ours;
      console.log(
        JSON.stringify({
          thinDevices: ours.thinDevices,
          ms: ours.timingsMs,
          ioRetries: ours.ioRetries,
        }),
      );
      assertScenarioOutcome(ours, image);
    });
    await t.step(
      "built-in devmapper on the same containerd produces the same outcome",
      async () => {
        const builtin = await runParityScenario(BUILTIN_SNAPSHOTTER, {
          ...env.contexts[BUILTIN_SNAPSHOTTER],
          image,
        });
        assert.ok(outcomes.ours, "our snapshotter's scenario did not complete");
        assert.deepEqual(parityView(outcomes.ours), parityView(builtin));
        const server = env.server!;
        console.log(`our server's RSS at the end: ${await server.rssKib()} KiB`);
      },
    );
  } finally {
    await Deno.remove(imageDir, { recursive: true });
  }
});
