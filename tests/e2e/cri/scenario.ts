/**
 * The Kubernetes node path, end to end: what kubelet asks of containerd's CRI plugin for a
 * host-network pod, run against whichever snapshotter the CRI plugin is configured with
 * (`snapshotter = "<name>"`). It imports the pause and test images into `k8s.io`, runs a pod,
 * creates and starts two containers, `ExecSync`s into both, reads `ContainerStats` and
 * `ImageFsInfo`, stops and removes everything, runs containerd's garbage collection, and
 * checks that no snapshot, thin device or (for ours) backend record of the pod is left.
 *
 * It returns what it observed, so that the built-in devmapper and our proxy snapshotter can be
 * compared outcome for outcome ({@linkcode criParityView}); raw byte counts and timings are
 * kept aside (`measured`), the checks on them are in the outcome as verdicts.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Containerd } from "../containerd.ts";
import { expectedProbe, parseProbe, type TestImage } from "../image.ts";
import { parseSnapshotList, type SnapshotRow } from "../scenario.ts";
import { poll, timedOut } from "../../../testing/poll.ts";
import type { ContainerConfig, CriClient, FilesystemUsage, PodSandboxConfig } from "./client.ts";
import { CRI_NAMESPACE } from "./config.ts";
import type { PauseImage } from "./pause_image.ts";

/** What the CRI scenario needs. */
export interface CriScenarioContext {
  /** containerd with the CRI plugin configured for `snapshotter`. */
  ctd: Containerd;
  /** CRI client on `ctd`'s socket. */
  cri: CriClient;
  /** The snapshotter CRI was configured with. */
  snapshotter: string;
  /** Container image (the e2e test image). */
  image: TestImage;
  /** The `sandbox_image` CRI was configured with. */
  pause: PauseImage;
  /** Directory for pod logs. */
  dir: string;
  /** Thin device ids in the snapshotter's pool. */
  thinIds(): Promise<number[]>;
  /** Names of the active dm devices on the snapshotter's pool. */
  activeDevices(): Promise<string[]>;
  /** Keys in the snapshotter's own records, when it can be asked directly (ours). */
  backendKeys?(): Promise<string[]>;
  /** Progress lines. */
  log?(message: string): void;
}

/** Everything the scenario observed that must match between snapshotters. */
export interface CriOutcome {
  snapshotter: string;
  /** `RuntimeReady` condition of CRI's Status. */
  runtimeReady: boolean;
  /** CRI's ImageStatus found both images after import. */
  imagesKnown: { pause: boolean; image: boolean };
  /** Committed snapshots after importing both images. */
  committedAfterImport: number;
  /** State of the pod in ListPodSandbox while it runs. */
  sandboxState: string;
  /** States of the two containers after StartContainer. */
  containerStates: string[];
  /** Kind of the snapshot keyed by the sandbox id and by each container id; parent relation. */
  podSnapshots: {
    sandbox: string;
    writer: string;
    reader: string;
    /** Each container's snapshot's parent is a committed layer of the image. */
    parentsCommitted: boolean;
  };
  /** Thin devices added while the pod runs (sandbox + 2 containers). */
  thinDevicesAddedByPod: number;
  /** What the writer's ExecSync printed: size, sha256 of the copy, root fs type. */
  writerExec: { exitCode: number; size: string; sha256: string; rootfsType: string };
  /** The probe run in the reader by ExecSync (merged layers as CRI mounted them). */
  readerProbe: Record<string, string>;
  /** Whether the reader sees the writer's copy (it must not). */
  readerSeesCopy: string;
  /** Verdicts on ContainerStats' writable layer. */
  writableLayer: {
    /** Present before the write (CRI's usage cache was filled). */
    present: boolean;
    /** Grew by at least the bytes written and by less than the write plus 8 MiB. */
    grewByTheWrite: boolean;
    /** Equal to the snapshotter's Usage of the container's snapshot (`ctr snapshots usage`). */
    equalsSnapshotterUsage: boolean;
    /** The file system id CRI reports is the snapshotter's. */
    mountpointIsSnapshotter: boolean;
    inodesPresent: boolean;
  };
  /** Verdicts on ImageFsInfo. */
  imageFs: {
    filesystems: number;
    usedBytesPositive: boolean;
    /** Equal to the sum of the snapshotter's Usage over every snapshot of `k8s.io`. */
    equalsUsageSum: boolean;
    inodesPresent: boolean;
    mountpointIsSnapshotter: boolean;
    /**
     * The directory CRI names exists: kubelet asks cadvisor for the file system holding it
     * (image GC and eviction fail with "failed to get device for dir" otherwise).
     */
    mountpointExists: boolean;
  };
  /** After removal and garbage collection. */
  afterCleanup: {
    containers: number;
    sandboxes: number;
    /** No snapshot keyed by the pod's sandbox or container ids. */
    podSnapshotsLeft: string[];
    /** `ctr snapshots ls` equals what it was after import. */
    snapshotsAsAfterImport: boolean;
    /** Thin ids equal those after import. */
    thinIdsAsAfterImport: boolean;
    /** Active dm devices on the pool equal those after import. */
    activeDevicesAsAfterImport: boolean;
  };
}

/** Raw figures (not compared between snapshotters). */
export interface CriMeasured {
  writableBytesBefore: number;
  writableBytesAfter: number;
  /** The snapshotter's Usage of the writer's snapshot, read with the last stats. */
  snapshotterUsage: number;
  writtenBytes: number;
  imageFsUsedBytes: number;
  /** Sum of the snapshotter's Usage over k8s.io, read with the last ImageFsInfo. */
  usageSum: number;
  /** Our backend records after cleanup equal those after import (ours only). */
  backendKeysAsAfterImport?: boolean;
  timingsMs: Record<string, number>;
}

/** What {@linkcode runCriScenario} returns. */
export interface CriScenarioResult {
  outcome: CriOutcome;
  measured: CriMeasured;
}

const WRITER_SCRIPT = [
  "cp /dmsnap/big.bin /copy.bin",
  "sync",
  "stat -c %s /copy.bin",
  "sha256sum /copy.bin | cut -d' ' -f1",
  `awk '$2=="/"{print $3}' /proc/mounts`,
].join(" && ");

/** Parses `ctr snapshots usage -b` (KEY SIZE INODES) into key → bytes. */
export function parseUsageList(stdout: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of stdout.split("\n").slice(1)) {
    const words = line.trim().split(/\s+/);
    if (words.length >= 2 && /^-?\d+$/.test(words[1])) out[words[0]] = Number(words[1]);
  }
  return out;
}

async function isDirectory(path: string | undefined): Promise<boolean> {
  if (!path) return false;
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

function sameSet<T>(a: T[], b: T[]): boolean {
  const x = [...a].map(String).sort();
  const y = [...b].map(String).sort();
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** The pod every run creates (host network, so no CNI plugin is needed). */
export function podConfig(name: string, logDir: string): PodSandboxConfig {
  return {
    metadata: { name, uid: `${name}-uid`, namespace: "dmsnap-e2e", attempt: 0 },
    log_directory: logDir,
    labels: { "dmsnap.test": name },
    linux: {
      security_context: {
        namespace_options: { network: "NODE", pid: "CONTAINER", ipc: "POD" },
      },
    },
  };
}

function containerConfig(name: string, image: string): ContainerConfig {
  return {
    metadata: { name, attempt: 0 },
    image: { image },
    command: ["/bin/sh", "-c", "exec sleep 3600"],
    envs: [{ key: "PATH", value: "/bin" }],
    log_path: `${name}.log`,
    linux: { security_context: { namespace_options: { pid: "CONTAINER", ipc: "POD" } } },
  };
}

/**
 * Runs the scenario. The pod and its containers are removed again (also on failure, as far
 * as CRI lets); images stay. Throws with containerd's log tail when a step fails outright.
 */
export async function runCriScenario(ctx: CriScenarioContext): Promise<CriScenarioResult> {
  const { ctd, cri, snapshotter, image, pause } = ctx;
  const log = (m: string) => ctx.log?.(`[cri ${snapshotter}] ${m}`);
  const k8s = { namespace: CRI_NAMESPACE };
  const snap = ["snapshots", "--snapshotter", snapshotter];
  const timings: Record<string, number> = {};
  const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      timings[name] = Math.round(performance.now() - t0);
    }
  };
  const snapshots = async (): Promise<SnapshotRow[]> =>
    parseSnapshotList((await ctd.ctr([...snap, "ls"], k8s)).stdout);
  const usages = async (keys: string[] = []) =>
    parseUsageList((await ctd.ctr([...snap, "usage", "-b", ...keys], k8s)).stdout);
  const fsSuffix = `/io.containerd.snapshotter.v1.${snapshotter}`;
  let podId: string | undefined;
  const containerIds: string[] = [];

  try {
    log("importing the pause and test images into k8s.io");
    await timed("import", async () => {
      for (const archive of [pause.archive, image.archive]) {
        await ctd.ctr(["images", "import", "--snapshotter", snapshotter, archive], k8s);
      }
    });
    const afterImport = await snapshots();
    const thinAfterImport = await ctx.thinIds();
    const activeAfterImport = await ctx.activeDevices();
    const backendAfterImport = await ctx.backendKeys?.();

    // CRI learns about images from containerd's events; wait until it knows both.
    const known = async (ref: string) =>
      (await poll(() => cri.imageStatus(ref), `CRI to know image ${ref}`, {
        timeoutMs: 15_000,
        intervalMs: 100,
      }).catch(timedOut)) !== undefined;
    const imagesKnown = { pause: await known(pause.ref), image: await known(image.ref) };
    const conditions = await cri.status();
    const runtimeReady = conditions.some((c) => c.type === "RuntimeReady" && c.status);

    log("running a host-network pod");
    const pod = podConfig(`pod-${snapshotter}`, `${ctx.dir}/pods/${snapshotter}`);
    await Deno.mkdir(pod.log_directory!, { recursive: true });
    podId = await timed("RunPodSandbox", () => cri.runPodSandbox(pod, { timeoutMs: 120_000 }));
    const thinBefore = thinAfterImport.length;
    const ids: Record<string, string> = {};
    for (const name of ["writer", "reader"]) {
      ids[name] = await timed(
        `CreateContainer ${name}`,
        () => cri.createContainer(podId!, containerConfig(name, image.ref), pod),
      );
      containerIds.push(ids[name]);
    }
    for (const name of ["writer", "reader"]) {
      await timed(`StartContainer ${name}`, () => cri.startContainer(ids[name]));
    }
    const sandboxState = (await cri.listPodSandbox()).find((p) => p.id === podId)?.state ??
      "missing";
    const listed = await cri.listContainers({ pod_sandbox_id: podId });
    const containerStates = ["writer", "reader"].map((n) =>
      listed.find((c) => c.id === ids[n])?.state ?? "missing"
    );

    const running = await snapshots();
    const kindOf = (key: string) => running.find((r) => r.key === key)?.kind ?? "missing";
    const committedKeys = new Set(afterImport.map((r) => r.key));
    const podSnapshots = {
      sandbox: kindOf(podId),
      writer: kindOf(ids.writer),
      reader: kindOf(ids.reader),
      parentsCommitted: [ids.writer, ids.reader].every((id) =>
        committedKeys.has(running.find((r) => r.key === id)?.parent ?? "")
      ),
    };
    const thinDevicesAddedByPod = (await ctx.thinIds()).length - thinBefore;

    log("reading the writer's stats before it writes");
    const statsBefore = await poll(
      async () => {
        const s = await cri.containerStats(ids.writer);
        return s?.writable_layer?.used_bytes && s.writable_layer.timestamp > 0 ? s : undefined;
      },
      "ContainerStats with a writable layer",
      { timeoutMs: 15_000, intervalMs: 250 },
    ).catch(timedOut);
    const writableBytesBefore = statsBefore?.writable_layer?.used_bytes?.value ?? 0;

    log("ExecSync: the writer copies the image's big file into its writable layer");
    const exec = await timed(
      "ExecSync writer",
      () => cri.execSync(ids.writer, ["/bin/sh", "-c", WRITER_SCRIPT]),
    );
    const [size = "", sha256 = "", rootfsType = ""] = exec.stdout.trim().split("\n");
    const writerExec = { exitCode: exec.exitCode, size, sha256, rootfsType };
    if (exec.exitCode !== 0) log(`writer exec stderr: ${exec.stderr}`);
    const readerProbe = parseProbe(
      (await cri.execSync(ids.reader, ["/bin/sh", "/dmsnap/probe.sh"])).stdout,
    );
    const readerSeesCopy = (await cri.execSync(ids.reader, [
      "/bin/sh",
      "-c",
      "if test -e /copy.bin; then echo present; else echo absent; fi",
    ])).stdout.trim();

    log("ContainerStats: the writable layer must show the write, as Usage measures it");
    const written = image.bigFileBytes;
    let writableBytesAfter = 0;
    let snapshotterUsage = -1;
    let wl: FilesystemUsage | null | undefined;
    // CRI refreshes its usage cache every stats_collect_period: wait for the refresh that
    // follows the write (the verdicts below are taken from the last reading either way).
    await poll(
      async () => {
        wl = (await cri.containerStats(ids.writer))?.writable_layer;
        writableBytesAfter = wl?.used_bytes?.value ?? 0;
        snapshotterUsage = (await usages([ids.writer]))[ids.writer] ?? -1;
        return writableBytesAfter >= writableBytesBefore + written &&
          writableBytesAfter === snapshotterUsage;
      },
      "the writable layer's bytes to include the write and equal the snapshotter's Usage",
      { timeoutMs: 20_000, intervalMs: 250 },
    ).catch(timedOut);
    const growth = writableBytesAfter - writableBytesBefore;
    const writableLayer = {
      present: statsBefore !== undefined,
      grewByTheWrite: growth >= written && growth < written + 8 * 1024 * 1024,
      equalsSnapshotterUsage: writableBytesAfter === snapshotterUsage,
      mountpointIsSnapshotter: wl?.fs_id?.mountpoint.endsWith(fsSuffix) ?? false,
      inodesPresent: wl?.inodes_used != null,
    };

    log("ImageFsInfo: used bytes are the snapshotter's Usage summed over k8s.io");
    let imageFsUsedBytes = 0;
    let usageSum = -1;
    let filesystems: FilesystemUsage[] = [];
    await poll(
      async () => {
        filesystems = await cri.imageFsInfo();
        imageFsUsedBytes = filesystems[0]?.used_bytes?.value ?? 0;
        usageSum = Object.values(await usages()).reduce((a, b) => a + b, 0);
        return imageFsUsedBytes === usageSum;
      },
      "ImageFsInfo's used bytes to equal the sum of Usage",
      { timeoutMs: 20_000, intervalMs: 250 },
    ).catch(timedOut);
    const imageFs = {
      filesystems: filesystems.length,
      usedBytesPositive: imageFsUsedBytes > 0,
      equalsUsageSum: imageFsUsedBytes === usageSum,
      inodesPresent: filesystems[0]?.inodes_used != null,
      mountpointIsSnapshotter: filesystems[0]?.fs_id?.mountpoint.endsWith(fsSuffix) ?? false,
      mountpointExists: await isDirectory(filesystems[0]?.fs_id?.mountpoint),
    };

    log("stopping and removing the containers and the pod");
    await timed("stop + remove", async () => {
      for (const id of containerIds) await cri.stopContainer(id, 0);
      for (const id of containerIds) await cri.removeContainer(id);
      await cri.stopPodSandbox(podId!);
      await cri.removePodSandbox(podId!);
    });
    const removedPod = podId;
    podId = undefined;
    containerIds.length = 0;
    const containers = (await cri.listContainers()).length;
    const sandboxes = (await cri.listPodSandbox()).length;

    log("garbage collection");
    // A synchronous image removal runs containerd's garbage collection to completion, which
    // removes the backend snapshots of the deleted containers and sandbox.
    await timed("gc", async () => {
      await ctd.ctr(["images", "tag", pause.ref, `${pause.ref}-gc`], k8s);
      await ctd.ctr(["images", "rm", "--sync", `${pause.ref}-gc`], k8s);
    });
    const afterCleanup = await snapshots();
    const podKeys = [removedPod, ids.writer, ids.reader];
    const thinAfter = await ctx.thinIds();
    const activeAfter = await ctx.activeDevices();
    const backendAfter = await ctx.backendKeys?.();

    const outcome: CriOutcome = {
      snapshotter,
      runtimeReady,
      imagesKnown,
      committedAfterImport: afterImport.filter((r) => r.kind === "Committed").length,
      sandboxState,
      containerStates,
      podSnapshots,
      thinDevicesAddedByPod,
      writerExec,
      readerProbe,
      readerSeesCopy,
      writableLayer,
      imageFs,
      afterCleanup: {
        containers,
        sandboxes,
        podSnapshotsLeft: afterCleanup.filter((r) => podKeys.includes(r.key)).map((r) => r.key),
        snapshotsAsAfterImport: JSON.stringify(afterCleanup) === JSON.stringify(afterImport),
        thinIdsAsAfterImport: sameSet(thinAfter, thinAfterImport),
        activeDevicesAsAfterImport: sameSet(activeAfter, activeAfterImport),
      },
    };
    const measured: CriMeasured = {
      writableBytesBefore,
      writableBytesAfter,
      snapshotterUsage,
      writtenBytes: written,
      imageFsUsedBytes,
      usageSum,
      backendKeysAsAfterImport: backendAfterImport && backendAfter
        ? sameSet(backendAfter, backendAfterImport)
        : undefined,
      timingsMs: timings,
    };
    return { outcome, measured };
  } catch (err) {
    // Leave nothing running for the next configuration, as far as CRI lets.
    for (const id of containerIds) {
      await cri.removeContainer(id).catch(() => {});
    }
    if (podId) {
      await cri.stopPodSandbox(podId).catch(() => {});
      await cri.removePodSandbox(podId).catch(() => {});
    }
    const tail = await ctd.logTail(3000);
    throw new Error(
      `CRI scenario with snapshotter "${snapshotter}" failed: ${(err as Error).message}\n` +
        `---- containerd log (tail) ----\n${tail}`,
      { cause: err },
    );
  }
}

/** What must be equal across snapshotters: the outcome without the snapshotter's name. */
export function criParityView(outcome: CriOutcome): Omit<CriOutcome, "snapshotter"> {
  const { snapshotter: _s, ...rest } = outcome;
  return rest;
}

/** Asserts the outcome a correct snapshotter must produce under CRI with `image` and `pause`. */
export function assertCriOutcome(
  outcome: CriOutcome,
  image: TestImage,
  pause: PauseImage,
): void {
  assert.equal(outcome.runtimeReady, true);
  assert.deepEqual(outcome.imagesKnown, { pause: true, image: true });
  assert.equal(outcome.committedAfterImport, image.layers + pause.layers);
  assert.equal(outcome.sandboxState, "SANDBOX_READY");
  assert.deepEqual(outcome.containerStates, ["CONTAINER_RUNNING", "CONTAINER_RUNNING"]);
  assert.deepEqual(outcome.podSnapshots, {
    sandbox: "Active",
    writer: "Active",
    reader: "Active",
    parentsCommitted: true,
  });
  assert.equal(outcome.thinDevicesAddedByPod, 3);
  assert.deepEqual(outcome.writerExec, {
    exitCode: 0,
    size: String(image.bigFileBytes),
    sha256: image.bigFileSha256,
    rootfsType: "ext4",
  });
  assert.deepEqual(outcome.readerProbe, expectedProbe(image));
  assert.equal(outcome.readerSeesCopy, "absent");
  assert.deepEqual(outcome.writableLayer, {
    present: true,
    grewByTheWrite: true,
    equalsSnapshotterUsage: true,
    mountpointIsSnapshotter: true,
    inodesPresent: true,
  });
  assert.deepEqual(outcome.imageFs, {
    filesystems: 1,
    usedBytesPositive: true,
    equalsUsageSum: true,
    inodesPresent: true,
    mountpointIsSnapshotter: true,
    mountpointExists: true,
  });
  assert.deepEqual(outcome.afterCleanup, {
    containers: 0,
    sandboxes: 0,
    podSnapshotsLeft: [],
    snapshotsAsAfterImport: true,
    thinIdsAsAfterImport: true,
    activeDevicesAsAfterImport: true,
  });
}
