import assert from "node:assert/strict";
import {
  aptPackages,
  findConfigTable,
  findPackageList,
  REGENERATE,
  regenerate,
  renderConfigTable,
  renderPackageList,
  REPO_ROOT,
} from "../../tools/gen_readme.ts";
import { CONFIG_KEYS, DEFAULT_VALUES, EXAMPLE_POOL_NAME } from "../../src/config/config.ts";

const readme = await Deno.readTextFile(`${REPO_ROOT}README.md`);
const setupSh = await Deno.readTextFile(`${REPO_ROOT}tools/setup.sh`);

Deno.test("README's configuration table is CONFIG_KEYS (key, default, meaning)", () => {
  const table = findConfigTable(readme).text;
  assert.equal(
    table,
    renderConfigTable(),
    `README.md's "Configuration reference" table differs from CONFIG_KEYS in ` +
      `src/config/config.ts; regenerate it with: ${REGENERATE}`,
  );
});

Deno.test("the rendered table has one row per key with its default", () => {
  const rows = renderConfigTable().trimEnd().split("\n").slice(2);
  const keys = Object.keys(CONFIG_KEYS) as (keyof typeof CONFIG_KEYS)[];
  assert.equal(rows.length, keys.length);
  keys.forEach((key, i) => {
    const cells = rows[i].split(" | ").map((c) => c.replace(/^\| |\s+\|?$/g, "").trim());
    assert.equal(cells[0], `\`${key}\``);
    assert.equal(cells[2], CONFIG_KEYS[key].summary);
    const value = DEFAULT_VALUES[key];
    const expected = key === "pool_name"
      ? "none (required)"
      : value === ""
      ? '`""`'
      : `\`${value}\``;
    assert.equal(cells[1], expected, key);
  });
  // pool_name has no default; the example name is what `config default` and `pool create` use
  assert.equal(DEFAULT_VALUES.pool_name, "");
  assert.ok(!rows[0].includes(`| \`${EXAMPLE_POOL_NAME}\``), rows[0]);
});

Deno.test("README's Debian packages are tools/setup.sh's APT_PACKAGES", () => {
  const listed = findPackageList(readme).text.split(/\s+/).filter((p) => p !== "");
  assert.deepEqual(
    listed,
    aptPackages(setupSh),
    `README.md's Debian package list ("Two commands") differs from APT_PACKAGES in ` +
      `tools/setup.sh; regenerate it with: ${REGENERATE}`,
  );
});

Deno.test("regenerating changes only the two generated parts, and is stable", () => {
  const stale = readme
    .replace(findConfigTable(readme).text, "| key | default | meaning |\n| - | - | - |\n")
    .replace(findPackageList(readme).text, "kmod");
  const fixed = regenerate(stale, setupSh);
  assert.equal(findConfigTable(fixed).text, renderConfigTable());
  assert.equal(findPackageList(fixed).text, renderPackageList(aptPackages(setupSh)));
  assert.equal(regenerate(fixed, setupSh), fixed);
  const outside = (text: string) => {
    const t = findConfigTable(text);
    const p = findPackageList(text);
    return [text.slice(0, p.start), text.slice(p.end, t.start), text.slice(t.end)];
  };
  assert.deepEqual(outside(fixed), outside(stale));
  for (const line of renderPackageList(aptPackages(setupSh)).split("\n")) {
    assert.ok(line.length <= 98, line);
  }
});

Deno.test("aptPackages reads a multi-line bash array", () => {
  assert.deepEqual(aptPackages("x=1\nAPT_PACKAGES=(a b\n  c-d e)\nfor p in\n"), [
    "a",
    "b",
    "c-d",
    "e",
  ]);
  assert.throws(() => aptPackages("PACKAGES=(a)"), /no APT_PACKAGES/);
});

Deno.test("every test file and source path the README names exists", async () => {
  const tracked = new Set<string>();
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(`${REPO_ROOT}${dir}`)) {
      if (e.name === "node_modules" || e.name.startsWith(".")) continue;
      const path = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory) await walk(path);
      else tracked.add(path);
    }
  };
  for (const dir of ["src", "tests", "testing", "bench", "tools"]) await walk(dir);
  const names = new Set([...tracked].map((p) => p.split("/").pop()!));
  const missing: string[] = [];
  for (const [, name] of readme.matchAll(/`([a-z0-9_]+_test\.(?:ts|go))`/g)) {
    if (!names.has(name)) missing.push(name);
  }
  for (const [, path] of readme.matchAll(/`((?:src|tests|testing|bench|tools)\/[\w./-]+\.\w+)`/g)) {
    if (!tracked.has(path)) missing.push(path);
  }
  assert.deepEqual(missing, [], "README.md names files that do not exist");
});
