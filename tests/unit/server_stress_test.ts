/**
 * Stress: 10,000 RPCs from a grpc-js client in a separate process against `serve` in another
 * process (Deno's node:http2 server once aborted after a few hundred cross-process calls,
 * denoland/deno#36788). The server must answer every call correctly, stay up, and still shut
 * down cleanly on SIGTERM.
 */
import assert from "node:assert/strict";
import { runStressClient } from "../../testing/stress_run.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function readLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  reader.releaseLock();
  return text.split("\n")[0];
}

Deno.test({
  name: "stress: 10,000 mixed calls from another process; server survives and stops on SIGTERM",
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "dmsnap-stress-" });
    const socket = `${dir}/s.sock`;
    const server = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "testing/memory_server.ts", "--address", socket],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let exited = false;
    server.status.then(() => exited = true);
    const stderr = server.stderr.pipeThrough(new TextDecoderStream()).getReader();
    const serverErr: string[] = [];
    const errDone = (async () => {
      for (;;) {
        const { value, done } = await stderr.read();
        if (done) return;
        serverErr.push(value);
      }
    })();
    try {
      assert.equal(await readLine(server.stdout), `listening ${socket}`);
      const run = await runStressClient({ address: socket, calls: 10_000, concurrency: 16 });
      assert.equal(run.code, 0, `client failed: ${run.report}\nserver: ${serverErr.join("")}`);
      const summary = run.summary;
      assert.ok(summary, run.report);
      assert.ok(summary.calls >= 10_001, JSON.stringify(summary));
      assert.equal(summary.unexpectedCount, 0);
      for (const code of ["OK", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"]) {
        assert.ok(summary.byCode[code] > 500, `${code}: ${JSON.stringify(summary.byCode)}`);
      }
      assert.ok(summary.byMethod.List >= 1500);

      // still alive: the process has not exited
      assert.equal(exited, false, `server exited: ${serverErr.join("")}`);

      server.kill("SIGTERM");
      const status = await server.status;
      assert.equal(status.code, 0, `server exit: ${serverErr.join("")}`);
      await assert.rejects(Deno.lstat(socket), Deno.errors.NotFound);
    } finally {
      try {
        server.kill("SIGKILL");
      } catch {
        // already gone
      }
      await server.status;
      await errDone;
      await server.stdout.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
