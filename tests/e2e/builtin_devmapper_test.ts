/**
 * The end-to-end scenario against containerd's built-in devmapper snapshotter: the reference
 * behaviour our proxy snapshotter must match (see `proxy_snapshotter_test.ts`).
 */
import assert from "node:assert/strict";
import { requireKernel } from "../kernel/fixtures.ts";
import { BUILTIN_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { buildTestImage } from "./image.ts";
import { assertScenarioOutcome, runParityScenario } from "./scenario.ts";

Deno.test("e2e: containerd's built-in devmapper snapshotter runs the parity scenario", async () => {
  requireKernel();
  const imageDir = await Deno.makeTempDir({ prefix: "e2e-image-" });
  try {
    const image = await buildTestImage({ dir: imageDir });
    await using env = await startE2eEnv({ builtin: true });
    const outcome = await runParityScenario(BUILTIN_SNAPSHOTTER, {
      ...env.contexts[BUILTIN_SNAPSHOTTER],
      image,
    });
    console.log(
      JSON.stringify({
        thinDevices: outcome.thinDevices,
        ms: outcome.timingsMs,
        ioRetries: outcome.ioRetries,
      }),
    );
    assertScenarioOutcome(outcome, image);
    // The built-in snapshotter keeps no device of its own: the pool ends empty.
    assert.equal(outcome.idleThinDevices, 0);
  } finally {
    await Deno.remove(imageDir, { recursive: true });
  }
});
