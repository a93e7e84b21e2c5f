/**
 * `ctr snapshots prepare|view|mounts|commit|usage|label|info|ls|rm` (containerd's Go client)
 * against our proxy snapshotter and against containerd's built-in devmapper in the same
 * containerd: every step has the same outcome on both.
 */
import assert from "node:assert/strict";
import { requireKernel } from "../kernel/fixtures.ts";
import type { Containerd } from "./containerd.ts";
import { BUILTIN_SNAPSHOTTER, PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";

/** One step's outcome, made comparable across snapshotters. */
interface Outcome {
  step: string;
  ok: boolean;
  /** Output with device names, times and sizes normalised. */
  output: string;
}

const FSTYPE_LABEL = "containerd.io/snapshot/devmapper/fstype";

function normalize(text: string): string {
  return text
    .replace(/\/dev\/mapper\/\S+/g, "<device>")
    .replace(/"\d{4}-\d\d-\d\dT[^"]+"/g, '"<time>"')
    .replace(/\/run\/e2e-\S+\/mnt-\S+/g, "<mountpoint>")
    .trim();
}

/** `ctr snapshots info` JSON with the built-in's own fstype label dropped. */
function infoOutput(stdout: string): string {
  const info = JSON.parse(stdout);
  if (info.Labels) delete info.Labels[FSTYPE_LABEL];
  if (info.Labels && Object.keys(info.Labels).length === 0) delete info.Labels;
  const sorted = Object.fromEntries(Object.keys(info).sort().map((k) => [k, info[k]]));
  return normalize(JSON.stringify(sorted));
}

/** `ctr snapshots label` output (`k=v,...`) without the built-in's fstype label and times. */
function labelOutput(stdout: string): string {
  return stdout.trim().split(",").filter((kv) => kv && !kv.startsWith(`${FSTYPE_LABEL}=`))
    .map((kv) => kv.replace(/^(containerd\.io\/gc\.root)=.*/, "$1=<time>")).sort().join(",");
}

async function scenario(ctd: Containerd, snapshotter: string): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const dir = `${ctd.dir}/mnt-${snapshotter}`;
  await Deno.mkdir(dir, { recursive: true });
  async function step(
    name: string,
    args: string[],
    shape: (stdout: string) => string = normalize,
  ): Promise<string> {
    const r = await ctd.ctr(["snapshots", "--snapshotter", snapshotter, ...args], {
      check: false,
    });
    const output = r.code === 0 ? shape(r.stdout) : normalize(errorClass(r.stderr));
    outcomes.push({ step: name, ok: r.code === 0, output });
    return r.stdout;
  }
  await step("prepare base-a", ["prepare", "base-a"]);
  await step("mounts base-a", ["mounts", dir, "base-a"]);
  await step("prepare base-a again", ["prepare", "base-a"]);
  await step("commit base", ["commit", "base", "base-a"]);
  await step("info base", ["info", "base"], infoOutput);
  await step("info base-a (gone)", ["info", "base-a"]);
  await step("view v1", ["view", "v1", "base"]);
  await step("mounts v1", ["mounts", dir, "v1"]);
  await step("commit a view", ["commit", "nope", "v1"]);
  await step("prepare child", ["prepare", "child", "base"]);
  await step("prepare on missing parent", ["prepare", "orphan", "missing"]);
  await step("info child", ["info", "child"], infoOutput);
  const usage = await step(
    "usage child",
    ["usage", "child"],
    (out) => /^child\s+\S+/m.test(out) ? "child <size> <inodes>" : out,
  );
  assert.match(usage, /child/);
  await step("label base", ["label", "base", "purpose=parity"], labelOutput);
  await step("info base (labelled)", ["info", "base"], infoOutput);
  await step("label base (remove)", ["label", "base", "purpose="], labelOutput);
  await step("info base (unlabelled)", ["info", "base"], infoOutput);
  await step(
    "ls",
    ["ls"],
    (out) =>
      out.trim().split("\n").slice(1).map((l) => l.trim().split(/\s+/).join(" ")).sort().join(
        "\n",
      ),
  );
  await step("rm base with children", ["rm", "base"]);
  await step("rm child", ["rm", "child"]);
  await step("rm v1", ["rm", "v1"]);
  await step("rm base", ["rm", "base"]);
  await step("rm missing", ["rm", "base"]);
  await step("ls (empty)", ["ls"], (out) => out.trim().split("\n").slice(1).join("\n"));
  return outcomes;
}

/** containerd's error class from `ctr: ... : <class>` (the text after the last colon). */
function errorClass(stderr: string): string {
  const line = stderr.trim().split("\n").at(-1) ?? "";
  const m = /: ([a-z ]+)$/.exec(line);
  return m ? `error: ${m[1]}` : `error: ${line}`;
}

Deno.test("e2e: ctr snapshots commands give the same outcomes on ours and the built-in devmapper", async () => {
  requireKernel();
  // ctr's snapshots commands set no gc roots: keep containerd's background garbage
  // collector from removing the snapshots between steps.
  await using env = await startE2eEnv({
    builtin: true,
    proxy: true,
    containerdPluginSettings: {
      "io.containerd.gc.v1.scheduler": {
        mutation_threshold: 1_000_000,
        deletion_threshold: 1_000_000,
        pause_threshold: 0.000001,
      },
    },
  });
  const builtin = await scenario(env.ctd, BUILTIN_SNAPSHOTTER);
  const ours = await scenario(env.ctd, PROXY_SNAPSHOTTER);
  // the expected shape, checked on ours (and so on both once they are equal)
  const byStep = Object.fromEntries(ours.map((o) => [o.step, o]));
  assert.equal(byStep["prepare base-a"].ok, true);
  assert.match(byStep["mounts base-a"].output, /^mount -t ext4 <device> <mountpoint>/);
  assert.equal(byStep["prepare base-a again"].ok, false);
  assert.match(byStep["prepare base-a again"].output, /already exists/);
  assert.match(byStep["info base"].output, /"Kind":"Committed"/);
  assert.equal(byStep["info base-a (gone)"].ok, false);
  // the one intended difference: a view of ours shares its parent's device read-only, and is
  // mounted without replaying the journal (README, View): ext4 `ro,noload`, the built-in `ro`
  assert.equal(byStep["mounts v1"].output, "mount -t ext4 <device> <mountpoint> -o ro,noload");
  byStep["mounts v1"].output = "mount -t ext4 <device> <mountpoint> -o ro";
  assert.equal(byStep["commit a view"].ok, false);
  assert.equal(byStep["prepare on missing parent"].ok, false);
  assert.match(byStep["info child"].output, /"Parent":"base"/);
  assert.match(byStep["info base (labelled)"].output, /"purpose":"parity"/);
  assert.doesNotMatch(byStep["info base (unlabelled)"].output, /purpose/);
  assert.equal(byStep["rm base with children"].ok, false);
  assert.equal(byStep["rm base"].ok, true);
  assert.equal(byStep["rm missing"].ok, false);
  assert.equal(byStep["ls (empty)"].output, "");
  assert.deepEqual(ours, builtin);
});
