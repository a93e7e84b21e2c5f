import assert from "node:assert/strict";
import { makeStaleSocket } from "../../testing/socket_fixtures.ts";
import {
  finishSocket,
  isSocketLive,
  MAX_SOCKET_PATH_BYTES,
  prepareSocketPath,
  removeSocket,
  SOCKET_MODE,
  SocketError,
  socketPath,
} from "./socket.ts";

Deno.test("socketPath accepts unix:// addresses and bare paths", () => {
  assert.equal(socketPath("/run/x/x.sock"), "/run/x/x.sock");
  assert.equal(socketPath("unix:///run/x/x.sock"), "/run/x/x.sock");
  assert.equal(socketPath("unix:/run/x/x.sock"), "/run/x/x.sock");
  assert.equal(socketPath("rel.sock"), `${Deno.cwd()}/rel.sock`);
  assert.equal(socketPath("unix:rel.sock"), `${Deno.cwd()}/rel.sock`);
});

Deno.test("socketPath rejects non-unix schemes, empty, NUL and over-long paths", () => {
  assert.throws(() => socketPath("tcp://127.0.0.1:1"), /only unix sockets are supported/);
  assert.throws(() => socketPath(""), /empty socket path/);
  assert.throws(() => socketPath("unix://"), /empty socket path/);
  assert.throws(() => socketPath("/tmp/a\0b"), /NUL/);
  const long = "/tmp/" + "x".repeat(MAX_SOCKET_PATH_BYTES);
  assert.throws(() => socketPath(long), SocketError);
  assert.throws(() => socketPath(long), /the limit is 107/);
  assert.equal(socketPath("/" + "x".repeat(MAX_SOCKET_PATH_BYTES - 1)).length, 107);
});

Deno.test("prepareSocketPath creates the missing directory (0711) and leaves a free path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/a/b/s.sock`;
    assert.equal(await prepareSocketPath(path), false);
    const st = await Deno.stat(`${dir}/a/b`);
    assert.ok(st.isDirectory);
    assert.equal(st.mode! & 0o777 & ~0o022, 0o711 & ~0o022);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("prepareSocketPath replaces a stale socket", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.sock`;
    await makeStaleSocket(path);
    assert.equal(await isSocketLive(path), false);
    assert.equal(await prepareSocketPath(path), true);
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("prepareSocketPath refuses a live socket and leaves it alone", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/s.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  try {
    assert.equal(await isSocketLive(path), true);
    await assert.rejects(
      prepareSocketPath(path),
      (err: Error) =>
        err instanceof SocketError && /another server is already listening/.test(err.message) &&
        err.message.includes(path),
    );
    assert.ok((await Deno.lstat(path)).isSocket);
  } finally {
    listener.close();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("prepareSocketPath refuses to delete a regular file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/not-a-socket`;
    await Deno.writeTextFile(path, "data");
    await assert.rejects(prepareSocketPath(path), /exists and is not a socket/);
    assert.equal(await Deno.readTextFile(path), "data");
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("finishSocket sets 0660; removeSocket removes only the same socket", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/s.sock`;
    await makeStaleSocket(path);
    const id = await finishSocket(path);
    assert.equal((await Deno.lstat(path)).mode! & 0o777, SOCKET_MODE);
    // someone else replaced the socket: leave theirs in place
    await Deno.remove(path);
    await makeStaleSocket(path);
    await removeSocket(path, id);
    assert.ok((await Deno.lstat(path)).isSocket);
    await removeSocket(path, await finishSocket(path));
    await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
    await removeSocket(path, id); // already gone: no error
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
