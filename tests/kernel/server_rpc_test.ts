/**
 * The gRPC service on the real snapshotter in the test kernel: every RPC over the unix socket,
 * the `serve` command as a separate process (config file, SIGTERM, restart), the `pool`
 * commands, and a cross-process hammer.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { connectSnapshots } from "../../testing/snapshots_client.ts";
import { grpcError } from "../../testing/grpc_error.ts";
import { startServer } from "../../src/server/server.ts";
import { createLogger } from "../../src/util/log.ts";
import { bindNotifyReceiver } from "../../testing/notify_receiver.ts";
import { runStressClient } from "../../testing/stress_run.ts";
import { requireKernel, shTry } from "./fixtures.ts";
import { runMain, serveTestSnapshotter, spawnServe } from "./main_fixtures.ts";
import { createTestSnapshotter, withMount } from "./snapshot_fixtures.ts";

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function tsNs(t: { seconds: number; nanos: number }): bigint {
  return BigInt(t.seconds) * 1_000_000_000n + BigInt(t.nanos);
}

Deno.test("server_rpc: every RPC over the socket against the real snapshotter", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  const socket = join(t.pool.dir, "run", "s.sock");
  const logs: string[] = [];
  const server = await startServer({
    address: socket,
    snapshotter: t.snapshotter,
    logger: createLogger({ level: "debug", write: (l) => logs.push(l) }),
  });
  const c = connectSnapshots(socket);
  try {
    const before = nowNs();
    const mounts = await c.prepare("default/1/base", "", { "containerd.io/snapshot.ref": "r1" });
    const after = nowNs();
    assert.equal(mounts.length, 1);
    assert.match(mounts[0].source, /^\/dev\/mapper\//);
    await withMount(mounts, (dir) => Deno.writeTextFile(`${dir}/hello`, "world\n"));

    const active = await c.stat("default/1/base");
    assert.equal(active.kind, "active");
    assert.deepEqual(active.created, active.updated, "created == updated, to the nanosecond");
    assert.ok(
      tsNs(active.created) >= before - 1_000_000n && tsNs(active.created) <= after + 1_000_000n,
    );
    assert.equal(active.labels["containerd.io/snapshot.ref"], "r1");
    assert.ok((await c.usage("default/1/base")).size > 0, "written data shows in Usage");

    await c.commit("default/2/layer", "default/1/base", { "containerd.io/snapshot.ref": "r1" });
    const layer = await c.stat("default/2/layer");
    assert.equal(layer.kind, "committed");
    assert.equal(layer.parent, "");

    const view = await c.view("default/3/view", "default/2/layer");
    assert.deepEqual(view[0].options, ["ro", "noload"]);
    await withMount(view, async (dir) => {
      assert.equal(await Deno.readTextFile(`${dir}/hello`), "world\n");
    });
    assert.deepEqual(await c.mounts("default/3/view"), view);
    await c.prepare("default/4/active", "default/2/layer");

    const updated = await c.update("default/2/layer", { "containerd.io/gc.root": "x" }, [
      "labels.containerd.io/gc.root",
    ]);
    assert.equal(updated.labels["containerd.io/gc.root"], "x");
    assert.equal(updated.labels["containerd.io/snapshot.ref"], "r1");
    assert.deepEqual(updated.created, layer.created);
    assert.ok(tsNs(updated.updated) >= tsNs(layer.updated));

    const all = await c.list();
    assert.deepEqual(
      all.infos.map((i) => i.name).sort(),
      ["default/2/layer", "default/3/view", "default/4/active"],
    );
    assert.deepEqual(all.infos.find((i) => i.name === "default/2/layer"), updated);
    const filtered = await c.list([
      'labels."containerd.io/snapshot.ref"==r1,parent==""',
      "kind==view",
    ]);
    assert.deepEqual(filtered.infos.map((i) => i.name).sort(), [
      "default/2/layer",
      "default/3/view",
    ]);

    // errors from the real core carry containerd's codes
    assert.equal((await grpcError(c.stat("default/9/missing"))).code, GrpcStatus.NOT_FOUND);
    assert.equal((await grpcError(c.prepare("default/4/active"))).code, GrpcStatus.ALREADY_EXISTS);
    assert.equal(
      (await grpcError(c.prepare("default/5/x", "default/4/active"))).code,
      GrpcStatus.INVALID_ARGUMENT,
    );
    assert.equal(
      (await grpcError(c.commit("default/6/y", "default/3/view"))).code,
      GrpcStatus.FAILED_PRECONDITION,
    );
    const rm = await grpcError(c.remove("default/2/layer"));
    assert.equal(rm.code, GrpcStatus.FAILED_PRECONDITION);
    assert.match(rm.details, /remove/);
    assert.equal(
      (await grpcError(c.update("default/2/layer", {}, ["parent"]))).code,
      GrpcStatus.INVALID_ARGUMENT,
    );
    assert.equal((await grpcError(c.list(['name=="x']))).code, GrpcStatus.INVALID_ARGUMENT);

    await c.remove("default/3/view");
    await c.remove("default/4/active");
    await c.remove("default/2/layer");
    await c.cleanup();
    assert.deepEqual((await c.list()).infos, []);
    assert.ok(logs.some((l) => /msg="rpc" .*method=Commit key=default\/2\/layer code=OK/.test(l)));
  } finally {
    c.close();
    await server.close();
  }
  await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
});

Deno.test("server_rpc: `main.ts serve --config --address` serves, stops on SIGTERM, restarts with state", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  await t.snapshotter.close(); // the served process owns the pool from here
  // started as a systemd Type=notify unit would be
  using notifications = bindNotifyReceiver(join(t.pool.dir, "notify.sock"));
  const first = await serveTestSnapshotter(t, {
    logLevel: "debug",
    env: { NOTIFY_SOCKET: notifications.address },
  });
  const { config, socket } = first;
  assert.equal(await notifications.next(), `STATUS=opening pool ${t.pool.name}`);
  assert.equal(await notifications.next(), `READY=1\nSTATUS=serving on ${socket}`);
  let c = connectSnapshots(socket);
  try {
    assert.equal((await Deno.lstat(socket)).mode! & 0o777, 0o660);
    await c.prepare("k/1", "");
    await c.commit("k/2", "k/1");
    await c.view("k/3", "k/2");
  } finally {
    c.close();
  }
  const stopped = await first.stop();
  assert.equal(stopped.code, 0, first.log());
  assert.equal(await notifications.next(), "STOPPING=1");
  assert.match(first.log(), /msg="rpc" .*method=Prepare key=k\/1 code=OK duration_ms=/);
  assert.match(first.log(), /msg="stopped"/);
  await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);

  const second = await spawnServe({ config, socket });
  c = connectSnapshots(socket);
  try {
    assert.equal((await c.stat("k/2")).kind, "committed");
    const view = await c.stat("k/3");
    assert.equal(view.kind, "view");
    assert.equal(view.parent, "k/2");
    // a second instance on the same socket is refused and leaves the first one alone
    const dup = await runMain(["serve", "--config", config, "--address", socket]);
    assert.equal(dup.code, 1);
    assert.match(dup.err, /another server is already listening/);
    assert.equal((await c.stat("k/2")).name, "k/2");
    await c.remove("k/3");
    await c.remove("k/2");
  } finally {
    c.close();
  }
  assert.equal((await second.stop()).code, 0, second.log());
  t.snapshotter = await t.reopen(); // so that disposal closes an open snapshotter
});

Deno.test("server_rpc: cross-process hammer against the real snapshotter", async () => {
  requireKernel();
  await using t = await createTestSnapshotter();
  await t.snapshotter.close();
  const serve = await serveTestSnapshotter(t);
  const { socket } = serve;
  const items = 10;
  const c = connectSnapshots(socket);
  try {
    await c.prepare("base-active", "");
    await c.commit("base", "base-active");
    for (let i = 0; i < items; i++) await c.prepare(`a${i}`, "base");
  } finally {
    c.close();
  }
  const run = await runStressClient({ address: socket, calls: 400, concurrency: 8, items });
  assert.equal(run.code, 0, `${run.report}\n${serve.log()}`);
  assert.ok(run.summary, run.report);
  assert.ok(run.summary.calls >= 400);
  assert.equal(run.summary.unexpectedCount, 0);
  assert.equal((await serve.stop()).code, 0, serve.log());
  t.snapshotter = await t.reopen();
  // every temporary snapshot the hammer made was removed again
  assert.deepEqual(
    (await t.snapshotter.list()).map((i) => i.name).filter((n) => n.startsWith("tmp-")),
    [],
  );
});

Deno.test("server_rpc: `pool create|status|destroy` manage a loop pool", async () => {
  requireKernel();
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-poolcli-" });
  const name = `clipool-${crypto.randomUUID().slice(0, 8)}`;
  const cli = (...args: string[]) => runMain(["pool", ...args]);
  try {
    const created = await cli(
      "create",
      "--name",
      name,
      "--dir",
      dir,
      "--data-size",
      "64MB",
      "--meta-size",
      "4MB",
    );
    assert.equal(created.code, 0, created.err);
    assert.match(
      created.out,
      new RegExp(`^created pool ${name}: data ${dir}/${name}-data\\.img on /dev/loop`),
    );
    const again = await cli("create", "--name", name, "--dir", dir);
    assert.equal(again.code, 1);
    assert.match(again.err, /a device-mapper device with that name exists/);

    const status = await cli("status", "--name", name, "--json");
    assert.equal(status.code, 0, status.err);
    const s = JSON.parse(status.out);
    assert.equal(s.name, name);
    assert.equal(s.dataTotalBytes, 64 * 1024 * 1024);
    assert.equal(s.metadataTotalBytes, 4 * 1024 * 1024);
    assert.equal(s.blockBytes, 64 * 1024);
    assert.equal(s.mode, "rw");
    const human = await cli("status", "--name", name);
    assert.match(human.out, /^data: {7}0B of 64MiB used/m);

    const destroyed = await cli("destroy", "--name", name, "--dir", dir);
    assert.equal(destroyed.code, 0, destroyed.err);
    assert.match(destroyed.out, /^removed pool device$/m);
    assert.equal((await shTry("dmsetup", "info", name)).code !== 0, true);
    const gone = await cli("status", "--name", name);
    assert.equal(gone.code, 1);
    assert.match(gone.err, new RegExp(`Cannot open pool "${name}": no such device`));
  } finally {
    await shTry("dmsetup", "remove", name);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
