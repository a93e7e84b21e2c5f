/**
 * The `containerd.io/snapshot/max-size` label end to end: `ctr run --snapshotter dmsnap
 * --snapshotter-label containerd.io/snapshot/max-size=N` (ctr 1.6 passes snapshot labels with
 * `--snapshotter-label`; its `--label` labels the container) and `df` inside the container
 * shows a root filesystem of that size, on ext4 and on xfs; a container without the label keeps
 * `base_image_size`; a malformed value is refused with a message naming the label.
 */
import assert from "node:assert/strict";
import { requireKernel } from "../kernel/fixtures.ts";
import { PROXY_SNAPSHOTTER, startE2eEnv } from "./environment.ts";
import { buildTestImage } from "./image.ts";
import { requireServerEntryPoint } from "./snapshotter_server.ts";
import type { Containerd } from "./containerd.ts";

const LABEL = "containerd.io/snapshot/max-size";
const MiB = 1024 * 1024;

/** Size (bytes) of `/` that `df -P -k /` prints inside a new container, with `labels`. */
async function rootSize(
  ctd: Containerd,
  ref: string,
  id: string,
  labels: string[],
): Promise<{ bytes: number; out: string }> {
  const snapshotLabels = labels.flatMap((l) => ["--snapshotter-label", l]);
  // containerd 1.6 may lose the output of a container that prints and exits at once (see
  // scenario.ts): the container waits a little after printing, and an empty run is repeated
  for (let attempt = 1;; attempt++) {
    const out = (await ctd.ctr([
      "run",
      "--rm",
      "--snapshotter",
      PROXY_SNAPSHOTTER,
      ...snapshotLabels,
      ref,
      `${id}-${attempt}`,
      "/bin/sh",
      "-c",
      "df -P -k / && sleep 0.5",
    ])).stdout;
    // POSIX format, one line per filesystem: Filesystem 1024-blocks Used Available Capacity /
    const line = out.split("\n").find((l) => /\s\/$/.test(l.trim()));
    if (line) return { bytes: Number(line.trim().split(/\s+/)[1]) * 1024, out };
    if (attempt === 3) throw new Error(`no df output for / in: ${JSON.stringify(out)}`);
  }
}

for (
  const fs of [
    { fsType: "ext4", base: 64 * MiB, asked: 200 * MiB, poolMb: 512 },
    // mkfs.xfs needs at least 300 MiB
    { fsType: "xfs", base: 320 * MiB, asked: 900 * MiB, poolMb: 1536 },
  ] as const
) {
  Deno.test(`e2e max-size (${fs.fsType}): df inside a container shows the size the label asks for`, async () => {
    requireKernel();
    await requireServerEntryPoint();
    const imageDir = await Deno.makeTempDir({ prefix: "e2e-image-" });
    try {
      const image = await buildTestImage({ dir: imageDir });
      await using env = await startE2eEnv({
        proxy: true,
        fsType: fs.fsType,
        baseImageSize: `${fs.base / MiB}MB`,
        poolDataMb: fs.poolMb,
      });
      const { ctd } = env;
      await ctd.ctr(["images", "import", "--snapshotter", PROXY_SNAPSHOTTER, image.archive]);
      const plain = await rootSize(ctd, image.ref, `plain-${fs.fsType}`, []);
      const grown = await rootSize(ctd, image.ref, `grown-${fs.fsType}`, [
        `${LABEL}=${fs.asked}`,
      ]);
      console.log(JSON.stringify({
        fsType: fs.fsType,
        baseBytes: fs.base,
        askedBytes: fs.asked,
        dfPlainBytes: plain.bytes,
        dfGrownBytes: grown.bytes,
      }));
      // df shows the filesystem's blocks less its own metadata (journal or log, inode tables:
      // a large share of a small filesystem, e.g. xfs' 64 MiB log), so: never more than asked,
      // and nearly all of what the label added is there
      assert.ok(plain.bytes <= fs.base, plain.out);
      assert.ok(grown.bytes <= fs.asked, grown.out);
      assert.ok(
        grown.bytes - plain.bytes >= 0.9 * (fs.asked - fs.base),
        `${grown.bytes} of ${fs.asked} (without the label ${plain.bytes} of ${fs.base})`,
      );
      // a value the snapshotter refuses: the container is not created, the message names it
      const refused = await ctd.ctr([
        "run",
        "--rm",
        "--snapshotter",
        PROXY_SNAPSHOTTER,
        "--snapshotter-label",
        `${LABEL}=12abc`,
        image.ref,
        `refused-${fs.fsType}`,
        "true",
      ], { check: false });
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, new RegExp(`label ${LABEL}="12abc": not a size in bytes`));
      assert.match(refused.stderr, /invalid argument/);
    } finally {
      await Deno.remove(imageDir, { recursive: true });
    }
  });
}
