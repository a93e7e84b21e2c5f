/**
 * An in-memory `Snapshotter` used ONLY as a test double for transport-level tests of the gRPC
 * server (batching, error-code mapping, cancellation, socket handling). It keeps Infos and
 * follows containerd's basic rules so responses are meaningful, but it has no devices.
 * The real snapshotter is exercised by tests/kernel/server_rpc_test.ts.
 *
 * @module
 */
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from "../src/util/errors.ts";
import { matchInfo } from "../src/snapshots/match.ts";
import type { Info, Kind, Mount, Snapshotter, Timestamp, Usage } from "../src/snapshots/types.ts";

/** Options of the double. */
export interface MemorySnapshotterOptions {
  /** Awaited at the start of every call (e.g. to hold calls in flight). */
  gate?: (method: string, key: string) => Promise<void>;
  /** Fixed clock for deterministic timestamps. */
  now?: () => Timestamp;
}

/** The double plus what tests inspect. */
export interface MemorySnapshotter extends Snapshotter {
  /** Calls received, as `method key`. */
  readonly calls: string[];
  /** True once close() ran. */
  readonly isClosed: () => boolean;
  /** Direct access to stored Infos. */
  readonly infos: Map<string, Info>;
}

function defaultNow(): Timestamp {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}

/** Creates an empty in-memory snapshotter. */
export function memorySnapshotter(options: MemorySnapshotterOptions = {}): MemorySnapshotter {
  const infos = new Map<string, Info>();
  const calls: string[] = [];
  const now = options.now ?? defaultNow;
  let closed = false;

  async function enter(method: string, key: string): Promise<void> {
    calls.push(`${method} ${key}`);
    await options.gate?.(method, key);
  }

  function get(key: string): Info {
    const info = infos.get(key);
    if (!info) throw new NotFoundError(`snapshot ${JSON.stringify(key)} does not exist`);
    return info;
  }

  function mountsOf(info: Info): Mount[] {
    return [{
      type: "ext4",
      source: `/dev/mapper/mem-${info.name.length}`,
      target: "",
      options: info.kind === "view" ? ["ro"] : [],
    }];
  }

  function create(kind: Kind, key: string, parent: string, labels: Record<string, string>): Info {
    if (infos.has(key)) {
      throw new AlreadyExistsError(`snapshot ${JSON.stringify(key)} already exists`);
    }
    if (parent) {
      const p = get(parent);
      if (p.kind !== "committed") {
        throw new InvalidArgumentError(`parent ${JSON.stringify(parent)} is not committed`);
      }
    }
    const t = now();
    const clean = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ""));
    const info: Info = { name: key, parent, kind, created: t, updated: t, labels: clean };
    infos.set(key, info);
    return info;
  }

  return {
    calls,
    infos,
    isClosed: () => closed,
    async prepare(key, parent, labels = {}) {
      await enter("prepare", key);
      return mountsOf(create("active", key, parent, labels));
    },
    async view(key, parent, labels = {}) {
      await enter("view", key);
      return mountsOf(create("view", key, parent, labels));
    },
    async mounts(key) {
      await enter("mounts", key);
      const info = get(key);
      if (info.kind === "committed") {
        throw new FailedPreconditionError(`snapshot ${JSON.stringify(key)} is not active or view`);
      }
      return mountsOf(info);
    },
    async commit(name, key, labels = {}) {
      await enter("commit", key);
      const info = get(key);
      if (info.kind !== "active") {
        throw new FailedPreconditionError(`snapshot ${JSON.stringify(key)} is not active`);
      }
      if (infos.has(name)) {
        throw new AlreadyExistsError(`snapshot ${JSON.stringify(name)} already exists`);
      }
      infos.delete(key);
      const t = now();
      const clean = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ""));
      infos.set(name, { ...info, name, kind: "committed", created: t, updated: t, labels: clean });
    },
    async remove(key) {
      await enter("remove", key);
      get(key);
      for (const other of infos.values()) {
        if (other.parent === key) {
          throw new FailedPreconditionError(
            `cannot remove snapshot ${JSON.stringify(key)} with child`,
          );
        }
      }
      infos.delete(key);
    },
    async stat(key) {
      await enter("stat", key);
      return structuredClone(get(key));
    },
    async update(info, paths) {
      await enter("update", info.name);
      const stored = get(info.name);
      let labels = { ...stored.labels };
      if (paths.length === 0) labels = { ...info.labels };
      for (const p of paths) {
        if (p === "labels") labels = { ...info.labels };
        else labels[p.slice("labels.".length)] = info.labels[p.slice("labels.".length)] ?? "";
      }
      labels = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== ""));
      const updated = { ...stored, labels, updated: now() };
      infos.set(info.name, updated);
      return structuredClone(updated);
    },
    async usage(key): Promise<Usage> {
      await enter("usage", key);
      get(key);
      return { size: 4096 * key.length, inodes: 0 };
    },
    async list(filter) {
      await enter("list", filter?.source.join(" | ") ?? "");
      const all = [...infos.values()];
      return (filter ? all.filter((i) => matchInfo(filter, i)) : all).map((i) =>
        structuredClone(i)
      );
    },
    async *walk(filter) {
      await enter("list", filter?.source.join(" | ") ?? "");
      const all = [...infos.values()];
      for (let i = 0; i < all.length; i += 100) {
        const page = all.slice(i, i + 100);
        yield (filter ? page.filter((info) => matchInfo(filter, info)) : page).map((info) =>
          structuredClone(info)
        );
      }
    },
    async cleanup() {
      await enter("cleanup", "");
    },
    close() {
      closed = true;
      return Promise.resolve();
    },
  };
}
