/**
 * Round-trips archives from the tar writer through GNU tar (`tar -tvf`, `tar -xf`).
 * Needs no kernel: runs on the host (`deno test -A tests/e2e/tar_test.ts`) and in the guest.
 */
import assert from "node:assert/strict";
import { type TarEntry, TarWriteError, writeTar } from "./tar.ts";

const encoder = new TextEncoder();

async function gnuTar(args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command("tar", {
    args,
    cwd,
    env: { LC_ALL: "C", TZ: "UTC" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.equal(out.code, 0, `tar ${args.join(" ")} failed: ${stderr}`);
  assert.equal(stderr, "", `tar warned: ${stderr}`);
  return new TextDecoder().decode(out.stdout);
}

const longDir = `deep/${"d".repeat(90)}/${"e".repeat(60)}`;
const longName = "n".repeat(120);

const ENTRIES: TarEntry[] = [
  { path: "dir", type: "dir", mode: 0o2775, uid: 1000, gid: 1001, mtime: 1_700_000_000 },
  { path: "dir/file.txt", type: "file", mode: 0o604, data: encoder.encode("hello\n") },
  { path: "dir/empty", type: "file" },
  { path: "dir/link", type: "symlink", linkname: "file.txt" },
  { path: "dir/hard", type: "hardlink", linkname: "dir/file.txt" },
  { path: `${longDir}/`, type: "dir" },
  { path: `${longDir}/split-into-prefix.txt`, type: "file", data: encoder.encode("p") },
  { path: `dir/${longName}`, type: "file", data: new Uint8Array(513).fill(7) },
  { path: "dir/longlink", type: "symlink", linkname: `/${"x".repeat(150)}` },
];

Deno.test("e2e tar writer: GNU tar lists every entry with its type, mode, owner and size", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tar-test-" });
  try {
    const archive = `${dir}/a.tar`;
    await Deno.writeFile(archive, writeTar(ENTRIES));
    const listing = (await gnuTar(["--numeric-owner", "-tvf", archive])).trim().split("\n");
    assert.equal(listing.length, ENTRIES.length);
    assert.match(listing[0], /^drwxrwsr-x 1000\/1001\s+0 2023-11-14 22:13 dir\/$/);
    assert.match(listing[1], /^-rw----r-- 0\/0\s+6 1970-01-01 00:00 dir\/file\.txt$/);
    assert.match(listing[2], /^-rw-r--r-- 0\/0\s+0 .* dir\/empty$/);
    assert.match(listing[3], /^lrwxrwxrwx 0\/0\s+0 .* dir\/link -> file\.txt$/);
    assert.match(listing[4], /^hrw-r--r-- 0\/0\s+0 .* dir\/hard link to dir\/file\.txt$/);
    assert.ok(listing[5].endsWith(` ${longDir}/`), listing[5]);
    assert.ok(listing[6].endsWith(` ${longDir}/split-into-prefix.txt`), listing[6]);
    assert.ok(listing[7].endsWith(` dir/${longName}`), listing[7]);
    assert.match(listing[7], /\s513 /);
    assert.ok(listing[8].endsWith(` dir/longlink -> /${"x".repeat(150)}`), listing[8]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e tar writer: GNU tar extracts the same contents", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tar-test-" });
  try {
    await Deno.writeFile(`${dir}/a.tar`, writeTar(ENTRIES));
    await Deno.mkdir(`${dir}/out`);
    await gnuTar(["-xf", "../a.tar"], `${dir}/out`);
    assert.equal(await Deno.readTextFile(`${dir}/out/dir/file.txt`), "hello\n");
    assert.equal((await Deno.stat(`${dir}/out/dir/file.txt`)).mode! & 0o7777, 0o604);
    assert.equal(await Deno.readLink(`${dir}/out/dir/link`), "file.txt");
    assert.equal((await Deno.stat(`${dir}/out/dir/hard`)).nlink, 2);
    assert.deepEqual(
      await Deno.readFile(`${dir}/out/dir/${longName}`),
      new Uint8Array(513).fill(7),
    );
    assert.equal(await Deno.readTextFile(`${dir}/out/${longDir}/split-into-prefix.txt`), "p");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("e2e tar writer: rejects absolute paths, .. and data on non-files", () => {
  assert.throws(() => writeTar([{ path: "/etc/x", type: "file" }]), TarWriteError);
  assert.throws(() => writeTar([{ path: "a/../b", type: "file" }]), /path must be relative/);
  assert.throws(
    () => writeTar([{ path: "d", type: "dir", data: new Uint8Array(1) }]),
    /only files carry data/,
  );
  assert.throws(() => writeTar([{ path: "l", type: "symlink" }]), /needs a target/);
});

Deno.test("e2e tar writer: empty archive is two zero blocks", () => {
  assert.deepEqual(writeTar([]), new Uint8Array(1024));
});
