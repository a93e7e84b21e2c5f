/**
 * 10,000 calls through containerd's Snapshots API with `snapshotter = dmsnap`: containerd's
 * own Go gRPC client (its proxy snapshotter) carries every one of them to our server. The
 * server must answer all of them correctly and stay up (Deno 2.9.5/2.9.6's `node:http2`
 * aborted under this kind of load; 2.8.3 is pinned).
 */
import assert from "node:assert/strict";
import { requireKernel } from "../kernel/fixtures.ts";
import { PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { connectSnapshots, isServiceError } from "../../testing/snapshots_client.ts";

const CALLS = 10_000;
const CONCURRENCY = 16;
const NS = "hammer";

Deno.test("e2e: our server survives 10,000 calls from containerd's Go client", async () => {
  requireKernel();
  await using env = await startE2eEnv({ proxy: true });
  const client = connectSnapshots(env.ctd.address, NS);
  const call = (method: Parameters<typeof client.raw>[0], request: Record<string, unknown>) =>
    client.raw(method, { snapshotter: PROXY_SNAPSHOTTER, ...request });
  try {
    // a small tree: two committed layers, an active and a view on top; gc roots, so that
    // containerd's garbage collector keeps them
    const labels = { "containerd.io/gc.root": "hammer" };
    await call("Prepare", { key: "base-active", labels });
    await call("Commit", { name: "base", key: "base-active", labels });
    await call("Prepare", { key: "top-active", parent: "base", labels });
    await call("Commit", { name: "top", key: "top-active", labels });
    await call("Prepare", { key: "work", parent: "top", labels });
    await call("View", { key: "look", parent: "top", labels });

    const outcomes = new Map<string, number>();
    const unexpected: string[] = [];
    const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
    const kinds = ["stat", "stat-missing", "mounts", "usage", "list", "update"] as const;
    let next = 0;
    const started = performance.now();
    const worker = async () => {
      while (next < CALLS) {
        const i = next++;
        const kind = kinds[i % kinds.length];
        try {
          switch (kind) {
            case "stat":
              await call("Stat", { key: ["base", "top", "work", "look"][i % 4] });
              break;
            case "stat-missing":
              await call("Stat", { key: `missing-${i}` });
              unexpected.push(`Stat of a missing key succeeded (${i})`);
              break;
            case "mounts":
              await call("Mounts", { key: i % 2 ? "work" : "look" });
              break;
            case "usage":
              await call("Usage", { key: "work" });
              break;
            case "list":
              await call("List", {});
              break;
            case "update":
              await call("Update", {
                info: { name: "top", labels: { "containerd.io/snapshot/hammer": String(i) } },
                update_mask: { paths: ["labels.containerd.io/snapshot/hammer"] },
              });
              break;
          }
          count(`${kind} ok`);
        } catch (err) {
          const code = isServiceError(err) ? err.code : -1;
          if (kind === "stat-missing" && code === 5) count("stat-missing NotFound");
          else unexpected.push(`${kind} #${i}: ${err}`);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `${CALLS} calls through containerd in ${seconds.toFixed(1)} s:`,
      Object.fromEntries(outcomes),
    );
    assert.deepEqual(unexpected.slice(0, 5), [], `${unexpected.length} unexpected outcomes`);
    const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
    assert.equal(total, CALLS);
    assert.ok(env.server!.running, "our server is still running");
    // and it still answers
    const info = await call("Stat", { key: "top" }) as { info?: { name?: string } };
    assert.equal(info.info?.name, "top");
  } finally {
    client.close();
  }
});
