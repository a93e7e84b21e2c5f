/**
 * Builds, without network, an OCI image archive that `ctr images import` accepts: three
 * layers made from Debian's static busybox that exercise what a snapshotter must get right
 * when layers are stacked — overwrites, whiteouts (file, directory, opaque directory),
 * symlinks, hard links, odd permissions, ownership, long paths and a big file with a known
 * sha256. The image carries `/dmsnap/probe.sh`, which prints what a container sees as
 * `key=value` lines; {@linkcode expectedProbe} says what it must print.
 *
 * @module
 */
import { type TarEntry, writeTar } from "./tar.ts";

/** Default name given to the image on import (annotation `io.containerd.image.name`). */
export const TEST_IMAGE_REF = "docker.io/library/dmsnap-test:latest";

/** Where the static busybox comes from (Debian package `busybox-static`). */
export const BUSYBOX_PATH = "/bin/busybox";

/** Commands linked to busybox in the image's `/bin`. */
export const BUSYBOX_APPLETS: readonly string[] = [
  "sh",
  "ls",
  "cat",
  "echo",
  "test",
  "stat",
  "readlink",
  "sha256sum",
  "cut",
  "awk",
  "tr",
  "sleep",
  "mkdir",
  "rm",
  "touch",
  "sync",
  "df",
  "du",
  "id",
  "wc",
  "head",
  "printf",
  "true",
  "false",
  "env",
];

/** Directory and file name long enough to need a ustar prefix or pax path record. */
export const LONG_DIR = `dmsnap/${"long-directory-name-".repeat(4)}x/${"nested-".repeat(14)}y`;

/** Options for {@linkcode buildTestImage}. */
export interface TestImageOptions {
  /** Directory to write the archive (and nothing else) into. */
  dir: string;
  /** Image name recorded for import (default {@linkcode TEST_IMAGE_REF}). */
  ref?: string;
  /** Size of the pseudo-random file in layer 2 (default 12 MiB). */
  bigFileBytes?: number;
  /** Line printed by the image's default command (default "Hello from dmsnap-test"). */
  message?: string;
}

/** Facts about a built image. */
export interface TestImage {
  /** Path of the OCI archive (a tar of an OCI image layout). */
  archive: string;
  ref: string;
  /** Digest of the image manifest (`sha256:...`). */
  manifestDigest: string;
  /** Uncompressed layer digests, bottom first (the image config's `rootfs.diff_ids`). */
  diffIds: string[];
  /** Number of layers. */
  layers: number;
  bigFileBytes: number;
  /** sha256 (hex) of `/dmsnap/big.bin`. */
  bigFileSha256: string;
  message: string;
}

const encoder = new TextEncoder();
const MTIME = 1_700_000_000;

/** Hex sha256 of bytes. */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reproducible pseudo-random bytes (xorshift32 stream seeded with `seed`). */
export function pseudoRandomBytes(length: number, seed = 0x2545f491): Uint8Array {
  const words = new Uint32Array(Math.ceil(length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  return new Uint8Array(words.buffer, 0, length);
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function text(s: string): Uint8Array {
  return encoder.encode(s);
}

/** The script baked into the image; one `key=value` line per observation. */
export const PROBE_SCRIPT = `#!/bin/sh
# Prints what this container sees of the image's layers, one key=value per line.
p() { printf '%s=%s\\n' "$1" "$2"; }
present() { if test -e "$1" || test -L "$1"; then echo present; else echo absent; fi; }
p overwritten "$(cat /dmsnap/overwritten.txt)"
p deleted_file "$(present /dmsnap/deleted.txt)"
p deleted_dir "$(present /dmsnap/deleted-dir)"
p opaque_dir "$(ls -A /dmsnap/opaque-dir | tr '\\n' ' ')"
p link "$(readlink /dmsnap/link)"
p link_content "$(cat /dmsnap/link)"
p abs_link "$(readlink /bin/sh)"
p odd_mode "$(stat -c %a /dmsnap/odd-perms)"
p setgid_dir "$(stat -c '%a %u:%g' /dmsnap/setgid-dir)"
p owned "$(stat -c '%a %u:%g' /dmsnap/owned)"
p hardlink "$(stat -c %h /dmsnap/target.txt) $(cat /dmsnap/hardlink)"
p long_path "$(cat /${LONG_DIR}/file.txt)"
p big_sha256 "$(sha256sum /dmsnap/big.bin | cut -d' ' -f1)"
p big_size "$(stat -c %s /dmsnap/big.bin)"
p tmp_mode "$(stat -c %a /tmp)"
p layer3 "$(cat /dmsnap/layer3.txt)"
p rootfs_type "$(awk '$2=="/"{print $3}' /proc/mounts)"
p rootfs_rw "$(if touch /.probe-rw 2>/dev/null; then rm /.probe-rw; echo yes; else echo no; fi)"
p marker "$(cat /marker 2>/dev/null || echo none)"
`;

/** What `/dmsnap/probe.sh` must print in a fresh container of `image`. */
export function expectedProbe(image: TestImage): Record<string, string> {
  return {
    overwritten: "layer 2 version",
    deleted_file: "absent",
    deleted_dir: "absent",
    opaque_dir: "c-from-layer3 ",
    link: "target.txt",
    link_content: "the link target",
    abs_link: "/bin/busybox",
    odd_mode: "604",
    setgid_dir: "2775 0:1000",
    owned: "640 1000:1000",
    hardlink: "2 the link target",
    long_path: "deep inside",
    big_sha256: image.bigFileSha256,
    big_size: String(image.bigFileBytes),
    tmp_mode: "1777",
    layer3: "added in layer 3",
    rootfs_type: "ext4",
    rootfs_rw: "yes",
    marker: "none",
  };
}

/** Parses `key=value` lines (as printed by the probe) into a record. */
export function parseProbe(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

function dir(path: string, mode = 0o755, uid = 0, gid = 0): TarEntry {
  return { path, type: "dir", mode, uid, gid, mtime: MTIME };
}

function file(path: string, data: Uint8Array | string, mode = 0o644, owner = [0, 0]): TarEntry {
  const bytes = typeof data === "string" ? text(data) : data;
  return { path, type: "file", data: bytes, mode, uid: owner[0], gid: owner[1], mtime: MTIME };
}

function layer1(busybox: Uint8Array): TarEntry[] {
  const longParts = LONG_DIR.split("/");
  const longDirs = longParts.map((_, i) => dir(longParts.slice(0, i + 1).join("/")));
  return [
    dir("bin"),
    file("bin/busybox", busybox, 0o755),
    ...BUSYBOX_APPLETS.map((name): TarEntry =>
      name === "sh"
        ? { path: "bin/sh", type: "symlink", linkname: "/bin/busybox", mtime: MTIME }
        : { path: `bin/${name}`, type: "symlink", linkname: "busybox", mtime: MTIME }
    ),
    dir("etc"),
    file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"),
    file("etc/group", "root:x:0:\nuser:x:1000:\n"),
    dir("proc"),
    dir("sys"),
    dir("dev"),
    dir("root", 0o700),
    dir("tmp", 0o1777),
    dir("dmsnap"),
    file("dmsnap/overwritten.txt", "layer 1 version"),
    file("dmsnap/deleted.txt", "layer 3 deletes me"),
    dir("dmsnap/deleted-dir"),
    file("dmsnap/deleted-dir/inner.txt", "gone with the directory"),
    dir("dmsnap/opaque-dir"),
    file("dmsnap/opaque-dir/a-from-layer1", "a"),
    file("dmsnap/opaque-dir/b-from-layer1", "b"),
    file("dmsnap/target.txt", "the link target"),
    { path: "dmsnap/link", type: "symlink", linkname: "target.txt", mtime: MTIME },
    { path: "dmsnap/hardlink", type: "hardlink", linkname: "dmsnap/target.txt", mtime: MTIME },
    file("dmsnap/odd-perms", "mode 0604", 0o604),
    dir("dmsnap/setgid-dir", 0o2775, 0, 1000),
    file("dmsnap/owned", "owned by 1000", 0o640, [1000, 1000]),
    ...longDirs.slice(1),
    file(`${LONG_DIR}/file.txt`, "deep inside"),
  ];
}

function layer2(big: Uint8Array): TarEntry[] {
  return [
    dir("dmsnap"),
    file("dmsnap/overwritten.txt", "layer 2 version"),
    file("dmsnap/big.bin", big),
  ];
}

function layer3(message: string): TarEntry[] {
  return [
    dir("dmsnap"),
    file("dmsnap/.wh.deleted.txt", ""),
    file("dmsnap/.wh.deleted-dir", ""),
    dir("dmsnap/opaque-dir"),
    file("dmsnap/opaque-dir/.wh..wh..opq", ""),
    file("dmsnap/opaque-dir/c-from-layer3", "c"),
    file("dmsnap/layer3.txt", "added in layer 3"),
    file("dmsnap/probe.sh", PROBE_SCRIPT, 0o755),
    file("dmsnap/hello.sh", `#!/bin/sh\necho ${shQuote(message)}\n`, 0o755),
  ];
}

function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

interface Blob {
  digest: string;
  size: number;
  bytes: Uint8Array;
}

async function blob(bytes: Uint8Array): Promise<Blob> {
  return { digest: `sha256:${await sha256Hex(bytes)}`, size: bytes.length, bytes };
}

/** One layer of {@linkcode writeOciArchive}: its entries, and whether to gzip the tar. */
export interface OciLayer {
  entries: TarEntry[];
  gzip: boolean;
}

/** Options for {@linkcode writeOciArchive}. */
export interface OciArchiveOptions {
  /** Path of the archive to write. */
  path: string;
  /** Name recorded for import (annotation `io.containerd.image.name`). */
  ref: string;
  /** Layers, bottom first. */
  layers: OciLayer[];
  /** The image config's `config` object (Env, Entrypoint, Cmd, ...). */
  config: Record<string, unknown>;
  /** One `created_by` line per layer for the config's history. */
  history: string[];
}

/** What {@linkcode writeOciArchive} wrote. */
export interface OciArchive {
  /** Digest of the image manifest (`sha256:...`). */
  manifestDigest: string;
  /** Uncompressed layer digests, bottom first (the image config's `rootfs.diff_ids`). */
  diffIds: string[];
}

/**
 * Writes an OCI image layout (one linux/amd64 manifest named `ref`) as a tar that
 * `ctr images import` accepts, with reproducible timestamps.
 */
export async function writeOciArchive(options: OciArchiveOptions): Promise<OciArchive> {
  const { ref } = options;
  const diffIds: string[] = [];
  const layerBlobs: Blob[] = [];
  for (const layer of options.layers) {
    const tar = writeTar(layer.entries);
    diffIds.push(`sha256:${await sha256Hex(tar)}`);
    layerBlobs.push(await blob(layer.gzip ? await gzip(tar) : tar));
  }
  const config = await blob(text(JSON.stringify({
    created: new Date(MTIME * 1000).toISOString(),
    architecture: "amd64",
    os: "linux",
    config: options.config,
    rootfs: { type: "layers", diff_ids: diffIds },
    history: options.history.map((created_by) => ({ created_by })),
  })));
  const manifest = await blob(text(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: config.digest,
      size: config.size,
    },
    layers: layerBlobs.map((b, i) => ({
      mediaType: options.layers[i].gzip
        ? "application/vnd.oci.image.layer.v1.tar+gzip"
        : "application/vnd.oci.image.layer.v1.tar",
      digest: b.digest,
      size: b.size,
    })),
  })));
  const index = text(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: manifest.digest,
      size: manifest.size,
      platform: { architecture: "amd64", os: "linux" },
      annotations: {
        "io.containerd.image.name": ref,
        "org.opencontainers.image.ref.name": ref.split(":").at(-1),
      },
    }],
  }));
  const blobs = [...layerBlobs, config, manifest];
  const layout: TarEntry[] = [
    file("oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" })),
    file("index.json", index),
    dir("blobs"),
    dir("blobs/sha256"),
    ...blobs.map((b) => file(`blobs/sha256/${b.digest.slice("sha256:".length)}`, b.bytes)),
  ];
  await Deno.writeFile(options.path, writeTar(layout));
  return { manifestDigest: manifest.digest, diffIds };
}

/** Reads Debian's static busybox (the one binary every test image carries). */
export async function readBusybox(): Promise<Uint8Array> {
  try {
    return await Deno.readFile(BUSYBOX_PATH);
  } catch (cause) {
    throw new Error(
      `Cannot build the test image: ${BUSYBOX_PATH} unreadable (apt-get install busybox-static)`,
      { cause },
    );
  }
}

/**
 * Builds the test image archive into `options.dir` and returns its facts. Layers 1 and 3 are
 * gzip-compressed, layer 2 (the big file) is a plain tar, so both layer media types are used.
 */
export async function buildTestImage(options: TestImageOptions): Promise<TestImage> {
  const ref = options.ref ?? TEST_IMAGE_REF;
  const bigFileBytes = options.bigFileBytes ?? 12 * 1024 * 1024;
  const message = options.message ?? "Hello from dmsnap-test";
  const busybox = await readBusybox();
  const big = pseudoRandomBytes(bigFileBytes);
  const layers: OciLayer[] = [
    { entries: layer1(busybox), gzip: true },
    { entries: layer2(big), gzip: false },
    { entries: layer3(message), gzip: true },
  ];
  const archive = `${options.dir}/image-oci.tar`;
  const written = await writeOciArchive({
    path: archive,
    ref,
    layers,
    config: {
      Env: ["PATH=/bin"],
      Cmd: ["/bin/sh", "/dmsnap/hello.sh"],
      WorkingDir: "/",
    },
    history: [
      "dmsnap-test: busybox, fixtures",
      "dmsnap-test: overwrite, big file",
      "dmsnap-test: whiteouts, probe",
    ],
  });
  return {
    archive,
    ref,
    manifestDigest: written.manifestDigest,
    diffIds: written.diffIds,
    layers: layers.length,
    bigFileBytes,
    bigFileSha256: await sha256Hex(big),
    message,
  };
}
