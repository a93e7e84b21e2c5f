/**
 * README.md's production pool steps are `deploy/lvm-thin-pool.sh` (which the kernel and e2e
 * tests run): the README shows the script's documented invocation, and the LVM commands it
 * lists are that invocation's `--dry-run` output, character for character. The script writes
 * the autoextend profile `pool create --lvm` writes (src/pool/lvm_pool.ts).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  DEFAULT_AUTOEXTEND_PERCENT,
  DEFAULT_AUTOEXTEND_THRESHOLD,
  lvmDmName,
  lvmProfileName,
  lvmProfileText,
} from "../../src/pool/lvm_pool.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const SCRIPT = "deploy/lvm-thin-pool.sh";
const script = await Deno.readTextFile(`${ROOT}${SCRIPT}`);
const readme = await Deno.readTextFile(`${ROOT}README.md`);

/** The invocation the script's header documents for production (`#   deploy/... args`). */
function documentedInvocation(text: string): string[] {
  const m = /^# {3}(deploy\/lvm-thin-pool\.sh [^\n]+)$/m.exec(text);
  assert.ok(m, `${SCRIPT} documents no invocation ("#   deploy/lvm-thin-pool.sh ...")`);
  return m[1].split(" ");
}

/** What the script prints with `--dry-run` before `args`, for the default LVM configuration. */
async function dryRun(args: string[]): Promise<string> {
  const out = await new Deno.Command("bash", {
    args: [SCRIPT, "--dry-run", ...args],
    cwd: ROOT,
    env: { LVM_SYSTEM_DIR: "/etc/lvm", LVM_SUPPRESS_FD_WARNINGS: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

/** The text of every ```sh block of `markdown`. */
function shBlocks(markdown: string): string[] {
  return [...markdown.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

Deno.test("README shows deploy/lvm-thin-pool.sh's documented invocation and its commands", async () => {
  const [script_, ...args] = documentedInvocation(script);
  const invocation = [script_, ...args].join(" ");
  const blocks = shBlocks(readme);
  assert.ok(
    blocks.includes(`${invocation}\n`),
    `README.md has no sh block holding exactly "${invocation}"`,
  );
  const commands = await dryRun(args);
  assert.ok(
    blocks.includes(commands),
    `README.md has no sh block holding exactly the commands \`${SCRIPT} --dry-run ${
      args.join(" ")
    }\` prints:\n${commands}`,
  );
});

Deno.test("deploy/lvm-thin-pool.sh prints the pool name and writes pool create --lvm's profile", async () => {
  const out = await dryRun(["my-vg", "pool-1", "1G"]);
  const dm = lvmDmName("my-vg", "pool-1");
  assert.equal(dm, "my--vg-pool--1");
  assert.ok(out.endsWith(`\n# pool_name = "${dm}"\n`), out);
  const profile = lvmProfileName("my-vg", "pool-1");
  const text = lvmProfileText({
    threshold: DEFAULT_AUTOEXTEND_THRESHOLD,
    percent: DEFAULT_AUTOEXTEND_PERCENT,
  });
  assert.ok(out.includes(`cat > /etc/lvm/profile/${profile}.profile <<'EOF'\n${text}EOF\n`), out);
  assert.match(out, new RegExp(`--metadataprofile ${profile} --name pool-1 my-vg\n`));
  // no devices: the volume group must exist, nothing is created on disks
  assert.doesNotMatch(out, /pvcreate|vgcreate/);
  const tuned = await dryRun([
    "--autoextend-threshold",
    "70",
    "--autoextend-percent",
    "50",
    "vg",
    "p",
    "1G",
  ]);
  assert.ok(tuned.includes(lvmProfileText({ threshold: 70, percent: 50 })), tuned);
});
