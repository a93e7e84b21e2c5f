/**
 * A pod sandbox ("pause") image built without network: one layer holding Debian's static
 * busybox, whose shell sleeps until SIGTERM or SIGINT and then exits 0 (containerd's CRI
 * stops a sandbox with SIGKILL anyway). CRI's `sandbox_image` names it; it is imported with
 * `ctr -n k8s.io images import` like the test image.
 *
 * @module
 */
import type { TarEntry } from "../tar.ts";
import { readBusybox, writeOciArchive } from "../image.ts";

/** Name of the pause image (a registry host CRI will never reach: it must be local). */
export const PAUSE_IMAGE_REF = "localhost/dmsnap-pause:1";

/** The sandbox's process: wait for a stop signal without a busy loop. */
export const PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done";

/** A built pause image. */
export interface PauseImage {
  /** Path of the OCI archive. */
  archive: string;
  ref: string;
  /** Number of layers (committed snapshots it leaves after import). */
  layers: number;
}

const MTIME = 1_700_000_000;

/** Writes the pause image archive into `dir`. */
export async function buildPauseImage(
  options: { dir: string; ref?: string },
): Promise<PauseImage> {
  const ref = options.ref ?? PAUSE_IMAGE_REF;
  const busybox = await readBusybox();
  const entries: TarEntry[] = [
    { path: "bin", type: "dir", mode: 0o755, mtime: MTIME },
    { path: "bin/busybox", type: "file", data: busybox, mode: 0o755, mtime: MTIME },
    { path: "bin/sh", type: "symlink", linkname: "busybox", mtime: MTIME },
    { path: "bin/sleep", type: "symlink", linkname: "busybox", mtime: MTIME },
    { path: "etc", type: "dir", mode: 0o755, mtime: MTIME },
    { path: "proc", type: "dir", mode: 0o755, mtime: MTIME },
    { path: "sys", type: "dir", mode: 0o755, mtime: MTIME },
    { path: "dev", type: "dir", mode: 0o755, mtime: MTIME },
  ];
  const archive = `${options.dir}/pause-oci.tar`;
  await writeOciArchive({
    path: archive,
    ref,
    layers: [{ entries, gzip: true }],
    config: { Env: ["PATH=/bin"], Entrypoint: ["/bin/sh", "-c", PAUSE_SCRIPT], WorkingDir: "/" },
    history: ["dmsnap-pause: busybox"],
  });
  return { archive, ref, layers: 1 };
}
