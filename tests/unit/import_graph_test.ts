/**
 * The architecture, checked: walks the import graph of `src/` (every module that is not a test)
 * and fails on an import cycle, on an import from a lower layer to a higher one, on an import
 * between two folders of the same layer, on `src/` importing test code, and on a module outside
 * every layer.
 *
 * The layers, top to bottom (a module may import its own folder and any layer below its own):
 *
 * | layer | folders                        | what it is                                         |
 * | ----- | ------------------------------ | -------------------------------------------------- |
 * | 9     | `cli`                          | commands: serve, pool, config                      |
 * | 8     | `server`, `config`             | the gRPC service and transports; the config file   |
 * | 7     | `snapshotter`                  | containerd's snapshot semantics on thin devices     |
 * | 6     | `pool`                         | thin devices in one thin-pool, its status and health |
 * | 5     | `metadata`, `dm`               | the SQLite store; device-mapper backends            |
 * | 4     | `snapshots`                    | containerd's snapshot model: types, labels, matching |
 * | 3     | `filters`                      | containerd's filter language (generic over fields)  |
 * | 2     | `sys`, `metrics`               | libc through FFI, the clock, sd_notify; Prometheus metrics and their endpoint |
 * | 1     | `util`                         | errors, log, sizes                                  |
 *
 * `config` is narrower still: it imports `util` only (the cli hands its values to the layers
 * that check them), so the config file never depends on the code it configures.
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join, normalize, relative } from "node:path";

const ROOT = new URL("../../", import.meta.url).pathname;
const SRC = join(ROOT, "src");

/** Layer of each top-level folder of `src/`. */
export const LAYERS: Readonly<Record<string, number>> = {
  cli: 9,
  server: 8,
  config: 8,
  snapshotter: 7,
  pool: 6,
  metadata: 5,
  dm: 5,
  snapshots: 4,
  filters: 3,
  sys: 2,
  metrics: 2,
  util: 1,
};

/** Files outside `src/` that `src/` may import: the program's version comes from deno.json. */
const OUTSIDE: readonly string[] = ["../deno.json"];

/** Folders whose imports are restricted further: they may import only these folders. */
const ONLY: Readonly<Record<string, readonly string[]>> = { config: ["config", "util"] };

/** Relative module specifiers in `text`: static, re-export, dynamic and `new URL` (workers). */
export function importSpecifiers(text: string): string[] {
  const found: string[] = [];
  const patterns = [
    /^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']/gms,
    /^\s*import\s*["']([^"']+)["']/gm,
    /\bimport\(\s*["']([^"']+)["']\s*\)/g,
    /new URL\(\s*["']([^"']+\.ts)["']\s*,\s*import\.meta\.url\s*\)/g,
  ];
  for (const pattern of patterns) {
    for (const m of text.matchAll(pattern)) if (m[1].startsWith(".")) found.push(m[1]);
  }
  return found;
}

/** The import graph of the non-test modules under `dir`, keyed by path relative to `src/`. */
export async function importGraph(dir: string): Promise<Map<string, string[]>> {
  const graph = new Map<string, string[]>();
  const walk = async (folder: string) => {
    for await (const entry of Deno.readDir(folder)) {
      const path = join(folder, entry.name);
      if (entry.isDirectory) await walk(path);
      else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
        const text = await Deno.readTextFile(path);
        const targets = importSpecifiers(text).map((spec) =>
          relative(dir, normalize(join(dirname(path), spec)))
        );
        graph.set(relative(dir, path), targets);
      }
    }
  };
  await walk(dir);
  return graph;
}

/** Every cycle of `graph` (strongly connected components of more than one module, or a self-import). */
export function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string) => {
    indices.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, indices.get(w)!));
      }
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of [...graph.keys()].sort()) if (!indices.has(v)) visit(v);
  return found;
}

/** Imports that break the layer rules, each as a readable line. */
export function layerViolations(graph: Map<string, string[]>): string[] {
  const problems: string[] = [];
  const folderOf = (path: string) => path.split("/")[0];
  for (const [from, targets] of graph) {
    const source = folderOf(from);
    if (!from.includes("/")) {
      problems.push(`${from}: a loose module at the root of src/ (put it in a layer's folder)`);
      continue;
    }
    if (!(source in LAYERS)) {
      problems.push(`${from}: folder "${source}" is in no layer (add it to LAYERS)`);
      continue;
    }
    for (const to of targets) {
      if (OUTSIDE.includes(to)) continue;
      if (to.startsWith("..")) {
        problems.push(`${from} imports ${to}: src/ imports nothing outside src/`);
        continue;
      }
      const target = folderOf(to);
      if (target === source) continue;
      if (ONLY[source] && !ONLY[source].includes(target)) {
        problems.push(`${from} imports ${to}: ${source}/ may import only ${ONLY[source]}`);
      } else if (!(target in LAYERS)) {
        problems.push(`${from} imports ${to}: folder "${target}" is in no layer`);
      } else if (LAYERS[target] > LAYERS[source]) {
        problems.push(
          `${from} imports ${to}: ${source} (layer ${LAYERS[source]}) is below ` +
            `${target} (layer ${LAYERS[target]})`,
        );
      } else if (LAYERS[target] === LAYERS[source]) {
        problems.push(`${from} imports ${to}: ${source} and ${target} are siblings`);
      }
    }
  }
  return problems.sort();
}

Deno.test("import graph: src/ has no import cycle", async () => {
  const graph = await importGraph(SRC);
  assert.ok(graph.size > 50, `walked ${graph.size} modules`);
  assert.deepEqual(cycles(graph), []);
});

Deno.test("import graph: every import of src/ goes to its own folder or a lower layer", async () => {
  assert.deepEqual(layerViolations(await importGraph(SRC)), []);
});

Deno.test("import graph: the checks find a cycle, an upward import, a sibling and a loose module", () => {
  const graph = new Map<string, string[]>([
    ["server/a.ts", ["server/b.ts", "snapshotter/s.ts"]],
    ["server/b.ts", ["server/a.ts"]],
    ["snapshotter/s.ts", ["server/a.ts", "filters/f.ts"]],
    ["filters/f.ts", []],
    ["metadata/m.ts", ["dm/d.ts"]],
    ["dm/d.ts", ["../testing/fake.ts"]],
    ["config/c.ts", ["dm/d.ts", "util/u.ts"]],
    ["util/u.ts", []],
    ["loose.ts", []],
  ]);
  assert.deepEqual(cycles(graph), [["server/a.ts", "server/b.ts", "snapshotter/s.ts"]]);
  assert.deepEqual(layerViolations(graph), [
    "config/c.ts imports dm/d.ts: config/ may import only config,util",
    "dm/d.ts imports ../testing/fake.ts: src/ imports nothing outside src/",
    "loose.ts: a loose module at the root of src/ (put it in a layer's folder)",
    "metadata/m.ts imports dm/d.ts: metadata and dm are siblings",
    "snapshotter/s.ts imports server/a.ts: snapshotter (layer 7) is below server (layer 8)",
  ]);
});

Deno.test("import graph: every kind of import is read", () => {
  const text = [
    'import { a } from "./a.ts";',
    'import type {\n  B,\n  C,\n} from "../b.ts";',
    'export { d } from "./d.ts";',
    'import "./side_effect.ts";',
    'const m = await import("./lazy.ts");',
    'new Worker(new URL("./worker.ts", import.meta.url).href);',
    'import assert from "node:assert/strict";',
    'import { x } from "smol-toml";',
  ].join("\n");
  assert.deepEqual(importSpecifiers(text).sort(), [
    "../b.ts",
    "./a.ts",
    "./d.ts",
    "./lazy.ts",
    "./side_effect.ts",
    "./worker.ts",
  ]);
});
