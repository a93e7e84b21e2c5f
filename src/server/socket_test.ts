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

/** A fresh temporary directory, removed with all it holds when disposed. */
function tempDir(): { path: string } & Disposable {
  const path = Deno.makeTempDirSync({ prefix: "dmsnap-socket-" });
  return { path, [Symbol.dispose]: () => Deno.removeSync(path, { recursive: true }) };
}

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
  using dir = tempDir();
  const path = `${dir.path}/a/b/s.sock`;
  assert.equal(await prepareSocketPath(path), false);
  const st = await Deno.stat(`${dir.path}/a/b`);
  assert.ok(st.isDirectory);
  assert.equal(st.mode! & 0o777 & ~0o022, 0o711 & ~0o022);
});

Deno.test("prepareSocketPath replaces a stale socket", async () => {
  using dir = tempDir();
  const path = `${dir.path}/s.sock`;
  await makeStaleSocket(path);
  assert.equal(await isSocketLive(path), false);
  assert.equal(await prepareSocketPath(path), true);
  await assert.rejects(Deno.lstat(path), Deno.errors.NotFound);
});

Deno.test("prepareSocketPath refuses a live socket and leaves it alone", async () => {
  using dir = tempDir();
  const path = `${dir.path}/s.sock`;
  using _listener = Deno.listen({ transport: "unix", path });
  assert.equal(await isSocketLive(path), true);
  await assert.rejects(
    prepareSocketPath(path),
    (err: Error) =>
      err instanceof SocketError && /another server is already listening/.test(err.message) &&
      err.message.includes(path),
  );
  assert.ok((await Deno.lstat(path)).isSocket);
});

Deno.test("prepareSocketPath refuses to delete a regular file", async () => {
  using dir = tempDir();
  const path = `${dir.path}/not-a-socket`;
  await Deno.writeTextFile(path, "data");
  await assert.rejects(prepareSocketPath(path), /exists and is not a socket/);
  assert.equal(await Deno.readTextFile(path), "data");
});

Deno.test("finishSocket sets 0660; removeSocket removes only the same socket", async () => {
  using dir = tempDir();
  const path = `${dir.path}/s.sock`;
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
});
