/**
 * Host crash-consistency tests of the snapshotter on the in-memory device mapper
 * (`testing/memory_dm.ts`): for every device-mapper (and formatter) step of Prepare, View,
 * Commit, Remove and Cleanup, found by recording the calls one run of the operation makes,
 *
 * - *fail* there: the operation either succeeds completely or fails with a clear error and
 *   leaves the snapshots as they were; retried without the fault, it succeeds; after a restart
 *   the store and the pool agree;
 * - *crash* there (before or after the kernel-side effect): the snapshotter is dropped without
 *   close (its database handle released as a dying process's would be), a new one is opened on
 *   the same root and pool (reconciling), and then: every snapshot row has its thin device,
 *   every thin device has a row, no row is left `creating`/`deleting`, the snapshots are those
 *   from before or after the operation with all their content, and exactly the devices of
 *   active snapshots and views are active.
 *
 * The kernel versions of these checks (real SIGKILLs at random moments) are in
 * `tests/kernel/crash_test.ts`; these cover every step deterministically, in seconds.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type DevmapperSnapshotter, openSnapshotter } from "./snapshotter.ts";
import { createClock } from "../sys/clock.ts";
import { NotFoundError, SnapshotterError } from "../util/errors.ts";
import type { Kind } from "../snapshots/types.ts";
import {
  type DmCall,
  type Fault,
  MemoryDeviceMapper,
  nameOfPath,
  READ_OPERATIONS,
  SimulatedCrash,
} from "../../testing/memory_dm.ts";
import {
  createMemoryFormatter,
  FIRST_DATA_BLOCK,
  ROOT_BLOCK,
  ROOT_EMPTY,
  SUPERBLOCK,
  superblockText,
} from "../../testing/memory_formatter.ts";
import { MAX_SIZE_LABEL } from "./size_label.ts";
import type { FsType } from "../pool/thin_pool.ts";
import { memorySnapshotterOptions } from "../../testing/memory_snapshotter_options.ts";

const POOL = "crashpool";
/** Where the test databases live: tmpfs when there is one (fsync is then free). */
const TEMP_PARENT = await tmpfsDir();

async function tmpfsDir(): Promise<string | undefined> {
  try {
    return (await Deno.stat("/dev/shm")).isDirectory ? "/dev/shm" : undefined;
  } catch {
    return undefined;
  }
}

/** Snapshotter settings that change which steps run. */
interface Config {
  name: string;
  asyncRemove: boolean;
  discardBlocks: boolean;
  /** Default ext4; only the cases marked `anyFs` run under another. */
  fsType?: FsType;
}

const CONFIGS: readonly Config[] = [
  { name: "sync remove", asyncRemove: false, discardBlocks: false },
  { name: "sync remove + discard", asyncRemove: false, discardBlocks: true },
  { name: "async remove + discard", asyncRemove: true, discardBlocks: true },
  // xfs grows while mounted: mount, grow, umount are three steps (see memory_formatter.ts)
  { name: "sync remove, xfs", asyncRemove: false, discardBlocks: false, fsType: "xfs" },
];

/** The max-size label the grow cases ask for: twice the memory snapshotter's base image. */
const GROWN_BYTES = 16 * 1024 * 1024;
const GROW_LABELS = { [MAX_SIZE_LABEL]: String(GROWN_BYTES) };

/** What the test expects of one snapshot. */
interface Expected {
  kind: Kind;
  /** Block → text the snapshot's device must hold. */
  blocks: Map<number, string>;
  /** The device is held open (a mount the crash does not take away). */
  mounted?: boolean;
}

/** The expected snapshots, by key. */
type Model = Map<string, Expected>;

function cloneModel(model: Model): Model {
  return new Map(
    [...model].map(([k, e]) => [k, { ...e, blocks: new Map(e.blocks) }]),
  );
}

/** A pool, a root directory and a snapshotter on them, plus what the test expects. */
class World {
  readonly dm = new MemoryDeviceMapper();
  readonly formatter = createMemoryFormatter(this.dm);
  readonly root: string;
  readonly config: Config;
  model: Model = new Map();
  #s: DevmapperSnapshotter | undefined;

  private constructor(root: string, config: Config) {
    this.root = root;
    this.config = config;
    this.dm.createPool(POOL, { dataBlocks: 4096 });
  }

  static async create(config: Config): Promise<World> {
    const root = await Deno.makeTempDir({ dir: TEMP_PARENT, prefix: "crash_test_" });
    const w = new World(root, config);
    await w.open();
    return w;
  }

  get s(): DevmapperSnapshotter {
    assert.ok(this.#s, "snapshotter open");
    return this.#s;
  }

  async open(): Promise<DevmapperSnapshotter> {
    this.#s = await openSnapshotter(memorySnapshotterOptions({
      rootPath: join(this.root, "root"),
      poolName: POOL,
      asyncRemove: this.config.asyncRemove,
      discardBlocks: this.config.discardBlocks,
      fsType: this.config.fsType ?? "ext4",
      dm: this.dm,
      formatter: this.formatter,
      clock: createClock({ backend: "calibrated" }),
    }));
    return this.#s;
  }

  /** A clean restart: close, open (reconciles). */
  async restart(): Promise<void> {
    await this.#s?.close();
    await this.open();
  }

  /**
   * The process died: its database handle goes away as the kernel would release it (no close
   * of the snapshotter, nothing else runs); called at the moment of the crash.
   */
  die(): void {
    this.#s?.pool.store.close();
    this.#s = undefined;
  }

  /** Opens a new snapshotter after {@linkcode die}, on the surviving pool. */
  async reopenAfterCrash(): Promise<void> {
    this.dm.restart();
    await this.open();
  }

  async dispose(): Promise<void> {
    await this.#s?.close();
    await Deno.remove(this.root, { recursive: true });
  }

  /** dm name of the device behind snapshot `key`, from its row. */
  deviceOf(key: string): string {
    const row = this.s.pool.store.getSnapshot(key);
    assert.ok(row, `snapshot "${key}" has a row`);
    const device = this.s.pool.store.getDevice(row.thinId);
    assert.ok(device, `snapshot "${key}" has a device row`);
    return device.name;
  }

  // model-keeping versions of the operations, for building states

  async prepare(key: string, parent: string, labels?: Record<string, string>): Promise<void> {
    const mounts = await this.s.prepare(key, parent, labels);
    assert.equal(nameOfPath(mounts[0].source), this.deviceOf(key));
    const grownTo = labels?.[MAX_SIZE_LABEL] ? Number(labels[MAX_SIZE_LABEL]) : undefined;
    applyCreate(this.model, "active", key, parent, { fsType: this.config.fsType, grownTo });
  }

  async view(key: string, parent: string): Promise<void> {
    await this.s.view(key, parent);
    applyCreate(this.model, "view", key, parent, { fsType: this.config.fsType });
  }

  write(key: string, block: number, text: string): void {
    this.dm.write(this.deviceOf(key), block, text);
    this.model.get(key)!.blocks.set(block, text);
  }

  mount(key: string): void {
    this.dm.openDevice(this.deviceOf(key));
    this.model.get(key)!.mounted = true;
  }

  async commit(name: string, key: string): Promise<void> {
    await this.s.commit(name, key);
    applyCommit(this.model, name, key);
  }

  async remove(key: string): Promise<void> {
    await this.s.remove(key);
    this.model.delete(key);
  }
}

/**
 * Adds snapshot `key` to the model: its parent's blocks, or an empty filesystem of
 * `fs.fsType` (default ext4); `fs.grownTo`: its filesystem grown to that size (max-size label).
 */
function applyCreate(
  model: Model,
  kind: Kind,
  key: string,
  parent: string,
  fs: { fsType?: FsType; grownTo?: number } = {},
): void {
  const blocks = parent
    ? new Map(model.get(parent)!.blocks)
    : new Map([[SUPERBLOCK, superblockText(fs.fsType ?? "ext4", "")], [ROOT_BLOCK, ROOT_EMPTY]]);
  if (fs.grownTo !== undefined) {
    const [, type, options] = /^fs=(\S+) options=(\S*)/.exec(blocks.get(SUPERBLOCK)!)!;
    blocks.set(SUPERBLOCK, superblockText(type, options, fs.grownTo));
  }
  model.set(key, { kind, blocks });
}

function applyCommit(model: Model, name: string, key: string): void {
  const e = model.get(key)!;
  model.delete(key);
  model.set(name, { ...e, kind: "committed" });
}

/** One operation under test: how to build the state before it, run it, and what it changes. */
interface OperationCase {
  name: string;
  /** Builds the state the operation starts from (ends with a clean restart). */
  setup(w: World): Promise<void>;
  run(s: DevmapperSnapshotter): Promise<unknown>;
  /** Keys a failure's message should name. */
  subjects: readonly string[];
  /** The model after the operation succeeded. */
  apply(model: Model, config: Config): void;
  /** Only under this remove mode. */
  asyncRemove?: boolean;
  /** Runs under every filesystem's config too (the others only under ext4's). */
  anyFs?: boolean;
  /** Makes no device-mapper call at all under `config` (only store work). */
  storeOnly?: (config: Config) => boolean;
}

/**
 * The common starting state: committed `base` (with a file), active `act` on it (with its own
 * file), view `v` of it, and committed leaf `leaf` on it.
 */
async function baseState(w: World): Promise<void> {
  await w.prepare("base-work", "");
  w.write("base-work", FIRST_DATA_BLOCK, "base file");
  await w.commit("base", "base-work");
  await w.prepare("act", "base");
  w.write("act", FIRST_DATA_BLOCK + 1, "act file");
  await w.view("v", "base");
  await w.prepare("leaf-work", "base");
  w.write("leaf-work", FIRST_DATA_BLOCK + 2, "leaf file");
  await w.commit("leaf", "leaf-work");
  await w.restart();
}

/** The base state plus committed `big`, made with the max-size label (grown), with a file. */
async function grownState(w: World): Promise<void> {
  await baseState(w);
  await w.prepare("big-work", "", GROW_LABELS);
  w.write("big-work", FIRST_DATA_BLOCK + 4, "big file");
  await w.commit("big", "big-work");
  await w.restart();
}

/** The base state plus committed `mounted`, committed while its device was open (still is). */
async function mountedState(w: World): Promise<void> {
  await baseState(w);
  await w.prepare("mounted-work", "base");
  w.mount("mounted-work");
  w.write("mounted-work", FIRST_DATA_BLOCK + 3, "mounted file");
  await w.commit("mounted", "mounted-work");
  await w.restart();
}

const CASES: readonly OperationCase[] = [
  {
    name: "Prepare without parent, grown by the max-size label",
    anyFs: true,
    setup: baseState,
    run: (s) => s.prepare("new", "", GROW_LABELS),
    subjects: ["new"],
    apply: (m, c) =>
      applyCreate(m, "active", "new", "", { fsType: c.fsType, grownTo: GROWN_BYTES }),
  },
  {
    name: "Prepare with parent, grown by the max-size label",
    anyFs: true,
    setup: baseState,
    run: (s) => s.prepare("new", "base", GROW_LABELS),
    subjects: ["new", "base"],
    apply: (m) => applyCreate(m, "active", "new", "base", { grownTo: GROWN_BYTES }),
  },
  {
    name: "Prepare with a grown parent (inherits its size, nothing to grow)",
    setup: grownState,
    run: (s) => s.prepare("new", "big"),
    subjects: ["new", "big"],
    apply: (m) => applyCreate(m, "active", "new", "big"),
  },
  {
    name: "Prepare without parent, first (builds the template)",
    setup: (w) => w.restart(),
    run: (s) => s.prepare("new", ""),
    subjects: ["new"],
    apply: (m) => applyCreate(m, "active", "new", ""),
  },
  {
    name: "Prepare without parent",
    setup: baseState,
    run: (s) => s.prepare("new", ""),
    subjects: ["new"],
    apply: (m) => applyCreate(m, "active", "new", ""),
  },
  {
    name: "Prepare with parent",
    setup: baseState,
    run: (s) => s.prepare("new", "base"),
    subjects: ["new", "base"],
    apply: (m) => applyCreate(m, "active", "new", "base"),
  },
  {
    name: "Prepare on a parent still mounted (suspend, snapshot, resume)",
    setup: mountedState,
    run: (s) => s.prepare("new", "mounted"),
    subjects: ["new", "mounted"],
    apply: (m) => applyCreate(m, "active", "new", "mounted"),
  },
  {
    name: "View with parent, the first (activates its device read-only)",
    setup: baseState,
    run: (s) => s.view("new", "leaf"),
    subjects: ["new", "leaf"],
    apply: (m) => applyCreate(m, "view", "new", "leaf"),
  },
  {
    name: "View with parent, another (shares the active device)",
    setup: baseState,
    storeOnly: () => true,
    run: (s) => s.view("new", "base"),
    subjects: ["new", "base"],
    apply: (m) => applyCreate(m, "view", "new", "base"),
  },
  {
    name: "View of a parent still mounted (a device of its own)",
    setup: mountedState,
    run: (s) => s.view("new", "mounted"),
    subjects: ["new", "mounted"],
    apply: (m) => applyCreate(m, "view", "new", "mounted"),
  },
  {
    name: "View without parent",
    setup: baseState,
    run: (s) => s.view("new", ""),
    subjects: ["new"],
    apply: (m) => applyCreate(m, "view", "new", ""),
  },
  {
    name: "View without parent, another (shares the template)",
    setup: async (w) => {
      await baseState(w);
      await w.view("empty", "");
    },
    storeOnly: () => true,
    run: (s) => s.view("new", ""),
    subjects: ["new"],
    apply: (m) => applyCreate(m, "view", "new", ""),
  },
  {
    name: "Commit",
    setup: baseState,
    run: (s) => s.commit("committed", "act"),
    subjects: ["committed", "act"],
    apply: (m) => applyCommit(m, "committed", "act"),
  },
  {
    name: "Commit while mounted (deferred deactivation)",
    setup: async (w) => {
      await baseState(w);
      w.mount("act");
    },
    run: (s) => s.commit("committed", "act"),
    subjects: ["committed", "act"],
    apply: (m) => applyCommit(m, "committed", "act"),
  },
  {
    name: "Remove an active snapshot",
    setup: baseState,
    storeOnly: (c) => c.asyncRemove,
    run: (s) => s.remove("act"),
    subjects: ["act"],
    apply: (m) => m.delete("act"),
  },
  {
    name: "Remove a view",
    setup: baseState,
    storeOnly: (c) => c.asyncRemove,
    run: (s) => s.remove("v"),
    subjects: ["v"],
    apply: (m) => m.delete("v"),
  },
  {
    name: "Remove a view that is not the last of its parent",
    setup: async (w) => {
      await baseState(w);
      await w.view("v2", "base");
    },
    storeOnly: () => true,
    run: (s) => s.remove("v"),
    subjects: ["v"],
    apply: (m) => m.delete("v"),
  },
  {
    name: "Remove the last view of the template",
    setup: async (w) => {
      await baseState(w);
      await w.view("empty", "");
    },
    storeOnly: (c) => c.asyncRemove,
    run: (s) => s.remove("empty"),
    subjects: ["empty"],
    apply: (m) => m.delete("empty"),
  },
  {
    name: "Remove a committed snapshot",
    setup: baseState,
    storeOnly: (c) => c.asyncRemove,
    run: (s) => s.remove("leaf"),
    subjects: ["leaf"],
    apply: (m) => m.delete("leaf"),
  },
  {
    name: "Cleanup after asynchronous removes",
    asyncRemove: true,
    setup: async (w) => {
      await baseState(w);
      await w.remove("act");
      await w.remove("leaf");
    },
    run: (s) => s.cleanup(),
    subjects: [],
    apply: () => {},
  },
  {
    name: "Cleanup after the asynchronous Remove of a last view (deactivates its device)",
    asyncRemove: true,
    setup: async (w) => {
      await baseState(w);
      await w.remove("v");
    },
    run: (s) => s.cleanup(),
    subjects: [],
    apply: () => {},
  },
];

/** One injection point: the `nth` call of `op` on `name` (and `thinId`) during the operation. */
interface Step {
  op: string;
  name?: string;
  thinId?: number;
  nth: number;
  label: string;
}

function stepsOf(calls: readonly DmCall[]): Step[] {
  const seen = new Map<string, number>();
  return calls.map((c) => {
    const id = `${c.op} ${c.name ?? ""} ${c.thinId ?? ""}`;
    const nth = (seen.get(id) ?? 0) + 1;
    seen.set(id, nth);
    const what = [c.op, c.name, c.thinId].filter((x) => x !== undefined).join(" ");
    return { op: c.op, name: c.name, thinId: c.thinId, nth, label: `#${c.index} ${what}` };
  });
}

function faultAt(step: Step, extra: Partial<Fault>): Fault {
  return { op: step.op, name: step.name, thinId: step.thinId, nth: step.nth, ...extra };
}

/** Checks that the snapshots are exactly those of `model`, with their content. */
async function checkSnapshots(w: World, model: Model, where: string): Promise<void> {
  const listed = new Map((await w.s.list()).map((i) => [i.name, i.kind]));
  const expected = new Map([...model].map(([k, e]) => [k, e.kind]));
  assert.deepEqual(listed, expected, `${where}: snapshots`);
  for (const [key, e] of model) {
    assert.equal((await w.s.stat(key)).kind, e.kind, `${where}: Stat ${key}`);
    const row = w.s.pool.store.getSnapshot(key)!;
    for (const [block, text] of e.blocks) {
      assert.equal(
        w.dm.readThinText(POOL, row.thinId, block),
        text,
        `${where}: content of ${key}, block ${block}`,
      );
    }
    if (e.kind !== "committed") {
      const source = nameOfPath((await w.s.mounts(key))[0].source);
      assert.equal(source, w.deviceOf(key), `${where}: mount source of ${key}`);
    }
  }
}

/**
 * Devices that views share: a view's device that is also a committed snapshot's or the
 * template's (a view with a device of its own is the only snapshot on it).
 */
function sharedDevices(w: World, model: Model): Set<string> {
  const store = w.s.pool.store;
  const templates = new Set(store.listTemplates().map((d) => d.name));
  const committed = new Set(
    [...model].filter(([, e]) => e.kind === "committed").map(([k]) => w.deviceOf(k)),
  );
  return new Set(
    [...model].filter(([, e]) => e.kind === "view").map(([k]) => w.deviceOf(k))
      .filter((name) => committed.has(name) || templates.has(name)),
  );
}

/** True when `listed` has exactly the keys and kinds of `model`. */
function sameSnapshots(model: Model, listed: Map<string, Kind>): boolean {
  if (model.size !== listed.size) return false;
  return [...model].every(([k, e]) => listed.get(k) === e.kind);
}

/**
 * The invariants after a (re)start: rows and thin ids agree, nothing pending, activity follows
 * the snapshots, and the snapshotter still works.
 */
async function checkReconciled(w: World, model: Model, where: string): Promise<void> {
  const store = w.s.pool.store;
  const busy = new Set(w.s.lastReconcile?.busy ?? []);
  assert.deepEqual(store.listSnapshots("creating").map((s) => s.key), [], `${where}: creating`);
  const devices = store.listDevices();
  for (const d of devices) {
    if (busy.has(d.name)) continue;
    assert.ok(["ready", "foreign"].includes(d.state), `${where}: device ${d.name} is ${d.state}`);
  }
  const inPool = new Set(w.dm.thinIds(POOL));
  // an interrupted create whose outcome cannot be proven ours is left alone on purpose (a
  // possible leak, never another owner's loss): recorded, but only as reported `unproven`
  const unproven = new Set(w.s.lastReconcile?.unproven ?? []);
  const recorded = new Set(
    devices.filter((d) => d.state !== "foreign" || unproven.has(d.thinId)).map((d) => d.thinId),
  );
  assert.deepEqual(
    [...inPool].filter((id) => !recorded.has(id)),
    [],
    `${where}: thin devices without a row (leaked)`,
  );
  for (const d of devices) {
    if (d.state === "ready") assert.ok(inPool.has(d.thinId), `${where}: ${d.name} not in pool`);
  }
  const used = new Set(store.listSnapshots().map((s) => s.thinId));
  for (const d of devices) {
    if (d.state === "ready" && d.role === "snapshot") {
      assert.ok(used.has(d.thinId), `${where}: ready device ${d.name} has no snapshot`);
    }
  }
  // activity follows the snapshots; a committed device stays only while still open (mounted)
  // or while views share it (read-only)
  const wanted = [
    ...new Set(
      [...model].filter(([, e]) => e.kind !== "committed" || e.mounted).map(([k]) => w.deviceOf(k)),
    ),
  ].sort();
  assert.deepEqual(w.dm.thinDevices(POOL), wanted, `${where}: active devices`);
  const shared = sharedDevices(w, model);
  for (const name of shared) {
    assert.ok((await w.dm.info(name))?.readOnly, `${where}: shared ${name} is read-only`);
  }
  const suspended: string[] = [];
  for (const [key, e] of model) {
    const info = await w.dm.info(w.deviceOf(key));
    if (e.kind === "committed" && info && !shared.has(info.name)) {
      assert.ok(w.dm.deferredRemovePending(info.name), `${where}: ${key} left active`);
    }
    if (info?.suspended) suspended.push(key);
  }
  await checkSnapshots(w, model, where);
  assert.deepEqual(w.dm.unsafeSnapshots, [], `${where}: snapshot of an unsuspended origin`);
  // still usable: a new snapshot sees its parent's content
  const parent = model.has("base") ? "base" : "";
  await w.s.view("probe", parent);
  const probe = w.deviceOf("probe");
  assert.equal(w.dm.readText(probe, ROOT_BLOCK), ROOT_EMPTY, `${where}: probe`);
  if (parent) assert.equal(w.dm.readText(probe, FIRST_DATA_BLOCK), "base file", where);
  await w.s.remove("probe");
  await w.s.cleanup();
  // last, so that a known issue here (see KNOWN_ISSUES) hides no other check
  for (const key of suspended) assert.fail(`${where}: device of ${key} left suspended`);
}

/**
 * The error of a failed operation must show the device-mapper cause, and name what failed (one
 * of `subjects`, or the template a parentless snapshot needs) or be a snapshotter error; a
 * problem with the latter is returned (checked last by the caller, see KNOWN_ISSUES).
 */
function checkClearError(
  err: unknown,
  subjects: readonly string[],
  where: string,
): string | undefined {
  assert.ok(err instanceof Error, `${where}: rejected with a non-Error ${err}`);
  assert.ok(!(err instanceof SimulatedCrash), `${where}: ${err}`);
  const text = [err.message, (err.cause as Error | undefined)?.message].join(" ");
  assert.match(text, /Input\/output error|injected fault/, `${where}: cause hidden: ${text}`);
  const named = subjects.some((k) => err.message.includes(`"${k}"`)) ||
    /template device/.test(err.message);
  if (err instanceof SnapshotterError || named) return undefined;
  return `${where}: unclear error ${err.name}: ${err.message}`;
}

async function withWorld<T>(
  config: Config,
  setup: (w: World) => Promise<void>,
  fn: (w: World) => Promise<T>,
): Promise<T> {
  const w = await World.create(config);
  try {
    await setup(w);
    return await fn(w);
  } finally {
    await w.dispose();
  }
}

/** Runs the operation once without faults; returns its steps. */
function record(config: Config, op: OperationCase): Promise<Step[]> {
  return withWorld(config, op.setup, async (w) => {
    const after = cloneModel(w.model);
    op.apply(after, config);
    const mark = w.dm.calls.length;
    await op.run(w.s);
    const calls = w.dm.calls.slice(mark);
    await checkSnapshots(w, after, `${op.name}: without faults`);
    await w.restart();
    await checkReconciled(w, after, `${op.name}: without faults, restarted`);
    return stepsOf(calls);
  });
}

/** The step fails with EIO. */
function failAt(config: Config, op: OperationCase, step: Step): Promise<void> {
  const where = `${op.name} failing at ${step.label}`;
  return withWorld(config, op.setup, async (w) => {
    const before = cloneModel(w.model);
    const after = cloneModel(w.model);
    op.apply(after, config);
    w.dm.injectFault(faultAt(step, { errno: "EIO" }));
    const outcome = await op.run(w.s).then(() => undefined, (err: unknown) => ({ err }));
    assert.deepEqual(w.dm.pendingFaults, [], `${where}: step not reached`);
    let unclear: string | undefined;
    if (outcome) {
      unclear = checkClearError(outcome.err, op.subjects, where);
      await checkSnapshots(w, before, `${where}: after the failure`);
      await op.run(w.s); // retried without the fault
    }
    await checkSnapshots(w, after, `${where}: after success`);
    await w.restart();
    await checkReconciled(w, after, `${where}: restarted`);
    if (unclear) assert.fail(unclear);
  });
}

/** The process dies at the step, before or after its kernel-side effect. */
function crashAt(
  config: Config,
  op: OperationCase,
  step: Step,
  point: "before" | "after",
): Promise<void> {
  const where = `${op.name} crashing ${point} ${step.label}`;
  return withWorld(config, op.setup, async (w) => {
    const before = cloneModel(w.model);
    const after = cloneModel(w.model);
    op.apply(after, config);
    w.dm.onCrash(() => w.die());
    w.dm.injectFault(faultAt(step, { crash: point }));
    await op.run(w.s).catch(() => {});
    assert.ok(w.dm.crashed, `${where}: step not reached`);
    await w.reopenAfterCrash();
    const listed = new Map((await w.s.list()).map((i) => [i.name, i.kind]));
    const now = sameSnapshots(before, listed) ? before : after;
    await checkReconciled(w, now, `${where}: reopened`);
  });
}

/**
 * Problems these tests found in the snapshotter that are not fixed yet. A scenario failing
 * only with such a problem does not fail the main tests; the `TODO(lead)` tests (ignored
 * until fixed) run the same scenarios without this tolerance.
 */
interface KnownIssue {
  /** Name of the TODO test. */
  title: string;
  /** The operations it shows in. */
  cases: (op: OperationCase) => boolean;
  /** Matches the failure message of a scenario. */
  failure: RegExp;
}

const KNOWN_ISSUES: readonly KnownIssue[] = [];

/** Runs every fail and crash scenario of `op`; returns the failures, each a message. */
async function runScenarios(config: Config, op: OperationCase): Promise<string[]> {
  const steps = await record(config, op);
  if (op.storeOnly?.(config)) assert.deepEqual(steps, [], "no device-mapper call");
  else assert.ok(steps.length > 0, "the operation made device-mapper calls");
  const failures: string[] = [];
  const attempt = async (run: () => Promise<void>) => {
    try {
      await run();
    } catch (err) {
      failures.push(err instanceof Error ? err.message.split("\n")[0] : String(err));
    }
  };
  for (const step of steps) {
    await attempt(() => failAt(config, op, step));
    await attempt(() => crashAt(config, op, step, "before"));
    if (!READ_OPERATIONS.has(step.op)) await attempt(() => crashAt(config, op, step, "after"));
  }
  return failures;
}

function applies(op: OperationCase, config: Config): boolean {
  if ((config.fsType ?? "ext4") !== "ext4" && !op.anyFs) return false;
  return op.asyncRemove === undefined || op.asyncRemove === config.asyncRemove;
}

for (const config of CONFIGS) {
  for (const op of CASES) {
    if (!applies(op, config)) continue;
    Deno.test(`crash consistency (${config.name}): ${op.name}: every step failing or crashing`, async () => {
      const failures = (await runScenarios(config, op)).filter((f) =>
        !KNOWN_ISSUES.some((k) => k.cases(op) && k.failure.test(f))
      );
      assert.deepEqual(failures, [], `${failures.length} scenario(s) failed`);
    });
  }
}

for (const issue of KNOWN_ISSUES) {
  Deno.test({
    name: `TODO(lead): crash consistency: ${issue.title}`,
    ignore: true,
    fn: async () => {
      const failures: string[] = [];
      for (const config of CONFIGS) {
        for (const op of CASES.filter((op) => applies(op, config) && issue.cases(op))) {
          const found = await runScenarios(config, op);
          failures.push(...found.map((f) => `(${config.name}) ${f}`));
        }
      }
      assert.deepEqual(failures, [], `${failures.length} scenario(s) failed`);
    },
  });
}

Deno.test("crash consistency: a failed Prepare reports the pool out of space", async () => {
  await withWorld(CONFIGS[0], baseState, async (w) => {
    w.dm.injectFault({ op: "createSnap", errno: "ENOSPC" });
    await assert.rejects(w.s.prepare("new", "base"), (err: Error) => {
      assert.match(err.message, /cannot create active snapshot "new".*out of space/);
      return true;
    });
    await assert.rejects(w.s.stat("new"), NotFoundError);
  });
});

Deno.test("crash consistency: Remove of a mounted snapshot is refused and leaves it intact", async () => {
  await withWorld(CONFIGS[0], baseState, async (w) => {
    w.mount("act");
    const before = cloneModel(w.model);
    await assert.rejects(w.s.remove("act"), (err: Error) => {
      assert.match(err.message, /cannot remove snapshot "act".*busy/);
      return true;
    });
    await checkSnapshots(w, before, "after the refused Remove");
    w.dm.closeDevice(w.deviceOf("act"));
    w.model.get("act")!.mounted = false;
    await w.remove("act");
    await w.restart();
    await checkReconciled(w, w.model, "after the Remove");
  });
});
