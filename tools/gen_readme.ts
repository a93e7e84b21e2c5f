/**
 * Regenerates the two parts of README.md that are copies of other files: the table of section
 * "Configuration reference" (rendered from `CONFIG_KEYS` in `src/config/config.ts`, the list the
 * parser, the flags, `config default` and `config check` use) and the list of Debian packages in
 * section "Two commands" (from `APT_PACKAGES` in `tools/setup.sh`). Nothing else of the README is
 * touched.
 *
 * Usage: `deno run --allow-read --allow-write tools/gen_readme.ts` (rewrites README.md), or with
 * `--check` (changes nothing, exits 1 when the README differs). `tests/unit/readme_test.ts` fails
 * when they drift apart.
 *
 * @module
 */
import { fileURLToPath } from "node:url";
import { CONFIG_KEYS, type ConfigKey, DEFAULT_VALUES } from "../src/config/config.ts";

/** Repository root (one level above this directory). */
export const REPO_ROOT: string = fileURLToPath(new URL("../", import.meta.url));
/** The command that rewrites the README's generated parts. */
export const REGENERATE = "deno run --allow-read --allow-write tools/gen_readme.ts";

/** Heading of the section holding the configuration table. */
const CONFIG_HEADING = "## Configuration reference";
/** Text right before the inline code span listing the Debian packages. */
const PACKAGES_LEAD = "(Debian packages:\n";
/** Longest README line the package list may make. */
const WIDTH = 100;

/** The README's cell for a key's default. */
function defaultCell(key: ConfigKey): string {
  if (CONFIG_KEYS[key].required) return "none (required)";
  const value = DEFAULT_VALUES[key];
  return value === "" ? '`""`' : `\`${value}\``;
}

/** The configuration table as `deno fmt` lays it out (one row per key, CONFIG_KEYS order). */
export function renderConfigTable(): string {
  const rows = [["key", "default", "meaning"]];
  for (const key of Object.keys(CONFIG_KEYS) as ConfigKey[]) {
    rows.push([`\`${key}\``, defaultCell(key), CONFIG_KEYS[key].summary]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => [...r[i]].length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => c + " ".repeat(widths[i] - [...c].length)).join(" | ")} |`;
  return [line(rows[0]), line(widths.map((w) => "-".repeat(w))), ...rows.slice(1).map(line)]
    .join("\n") + "\n";
}

/** A part of a text: where it starts and ends, and what it says. */
export interface Span {
  start: number;
  end: number;
  text: string;
}

/** The table (its `|` lines, with their final newline) of the configuration section. */
export function findConfigTable(readme: string): Span {
  const heading = readme.indexOf(`\n${CONFIG_HEADING}\n`);
  if (heading < 0) throw new Error(`README.md has no "${CONFIG_HEADING}" section`);
  const start = readme.indexOf("\n|", heading) + 1;
  const next = readme.indexOf("\n## ", heading + 1);
  if (start === 0 || (next >= 0 && start > next)) {
    throw new Error(`README.md's "${CONFIG_HEADING}" section has no table`);
  }
  let end = start;
  while (readme.startsWith("|", end)) {
    const eol = readme.indexOf("\n", end);
    end = eol < 0 ? readme.length : eol + 1;
  }
  return { start, end, text: readme.slice(start, end) };
}

/** The packages of `APT_PACKAGES=(...)` in tools/setup.sh, in order. */
export function aptPackages(setupSh: string): string[] {
  const m = /^APT_PACKAGES=\(([^)]*)\)/m.exec(setupSh);
  if (!m) throw new Error("tools/setup.sh has no APT_PACKAGES=(...) array");
  return m[1].split(/\s+/).filter((p) => p !== "");
}

/** The inline code span (without its backticks) listing the README's Debian packages. */
export function findPackageList(readme: string): Span {
  const lead = readme.indexOf(`${PACKAGES_LEAD}\``);
  if (lead < 0) throw new Error(`README.md has no "${PACKAGES_LEAD.trim()}" list`);
  const start = lead + PACKAGES_LEAD.length + 1;
  const end = readme.indexOf("`", start);
  return { start, end, text: readme.slice(start, end) };
}

/** `packages` as the code span's text, wrapped so that no line passes {@linkcode WIDTH}. */
export function renderPackageList(packages: readonly string[]): string {
  const lines: string[] = [];
  let line = "";
  for (const p of packages) {
    // the first line opens with "`", the last closes with "`;"
    const room = WIDTH - (lines.length === 0 ? 1 : 0) - 2;
    if (line !== "" && line.length + 1 + p.length > room) {
      lines.push(line);
      line = p;
    } else line = line === "" ? p : `${line} ${p}`;
  }
  lines.push(line);
  return lines.join("\n");
}

/** The README with both generated parts rendered from their sources. */
export function regenerate(readme: string, setupSh: string): string {
  const table = findConfigTable(readme);
  let out = readme.slice(0, table.start) + renderConfigTable() + readme.slice(table.end);
  const list = findPackageList(out);
  out = out.slice(0, list.start) + renderPackageList(aptPackages(setupSh)) + out.slice(list.end);
  return out;
}

if (import.meta.main) {
  const readmePath = `${REPO_ROOT}README.md`;
  const readme = await Deno.readTextFile(readmePath);
  const fixed = regenerate(readme, await Deno.readTextFile(`${REPO_ROOT}tools/setup.sh`));
  if (Deno.args.includes("--check")) {
    if (fixed !== readme) {
      console.error(`README.md is out of date; run: ${REGENERATE}`);
      Deno.exit(1);
    }
  } else if (fixed !== readme) {
    await Deno.writeTextFile(readmePath, fixed);
    console.log("README.md updated");
  } else console.log("README.md is up to date");
}
