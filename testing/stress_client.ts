/**
 * Hammers a Snapshots server from its own process with a grpc-js client: `--calls` RPCs mixing
 * Stat, List (multi-message streams), Usage, Prepare/Remove, Mounts, Update and errors
 * (NotFound, InvalidArgument, FailedPrecondition, mid-call client cancellation), `--concurrency` at a
 * time. Checks every answer and prints a JSON summary on stdout; exits 1 on any unexpected
 * answer.
 *
 * Expects the layout of tests/stress/memory_server.ts or any server holding a committed `base`
 * and active children `a0..a<items-1>` (`--items`).
 *
 * Usage: deno run -A tests/stress/grpc_client.ts --address SOCK [--calls 10000]
 *        [--concurrency 16] [--items 150]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { connectSnapshots, isServiceError } from "./snapshots_client.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    address: { type: "string" },
    calls: { type: "string", default: "10000" },
    concurrency: { type: "string", default: "16" },
    items: { type: "string", default: "150" },
  },
});
if (!values.address) throw new Error("Cannot start: --address is required");
const total = Number(values.calls);
const items = Number(values.items);
const client = connectSnapshots(values.address);

const byCode: Record<string, number> = {};
const byMethod: Record<string, number> = {};
const unexpected: string[] = [];
let issued = 0;

function count(method: string, code: number): void {
  const name = GrpcStatus[code] ?? String(code);
  byCode[name] = (byCode[name] ?? 0) + 1;
  byMethod[method] = (byMethod[method] ?? 0) + 1;
}

/** Runs one call and checks its outcome against the expected codes. */
async function check(
  method: string,
  expected: number[],
  call: () => Promise<unknown>,
  verify?: (result: unknown) => string | undefined,
): Promise<void> {
  issued++;
  let code: number = GrpcStatus.OK;
  let detail = "";
  try {
    const result = await call();
    const problem = verify?.(result);
    if (problem) detail = problem;
  } catch (err) {
    if (!isServiceError(err)) {
      unexpected.push(`${method}: non-gRPC error ${err}`);
      return;
    }
    code = err.code;
    detail = err.details;
  }
  count(method, code);
  if (!expected.includes(code) || (code === GrpcStatus.OK && detail)) {
    unexpected.push(`${method}: code ${GrpcStatus[code]} ${detail}`);
  }
}

async function one(i: number): Promise<void> {
  const k = `a${i % items}`;
  switch (i % 10) {
    case 0:
      return check("Stat", [0], () => client.stat(k), (r) => {
        const info = r as { name: string; kind: string; parent: string };
        return info.name === k && info.kind === "active" && info.parent === "base"
          ? undefined
          : `wrong info ${JSON.stringify(r)}`;
      });
    case 1:
      return check("Stat", [GrpcStatus.NOT_FOUND], () => client.stat(`missing-${i}`));
    case 2:
      return check("List", [0], () => client.list(), (r) => {
        const { infos, messages } = r as { infos: unknown[]; messages: number };
        const want = items + 1;
        return infos.length >= want && messages === Math.ceil(infos.length / 100)
          ? undefined
          : `List gave ${infos.length} infos in ${messages} messages`;
      });
    case 3:
      return check("Usage", [0], () => client.usage(k));
    case 4:
      return check("Prepare", [GrpcStatus.INVALID_ARGUMENT], () => client.prepare(""));
    case 5:
      await check("Prepare", [0], () => client.prepare(`tmp-${i}`, "base"));
      return check("Remove", [0], () => client.remove(`tmp-${i}`));
    case 6:
      return check("Update", [GrpcStatus.INVALID_ARGUMENT], () => client.update(k, {}, ["parent"]));
    case 7:
      return check(
        "List",
        [GrpcStatus.INVALID_ARGUMENT],
        () => client.list(['name=="unterminated']),
      );
    case 8: {
      // Client cancellations, mid-call (`slow-` keys take 30 ms on the memory server). Kept
      // to 1 in 50 calls: HTTP/2 servers (nghttp2 in Node, Deno's node:http2) answer a burst
      // of more than ~1000 stream resets on one connection with GOAWAY ("rapid reset"
      // protection), which would cut every other call on that connection.
      if (i % 50 !== 8) return check("Stat", [0], () => client.stat(k));
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 10);
      return check(
        "Stat",
        [GrpcStatus.CANCELLED, GrpcStatus.NOT_FOUND],
        () => client.stat(`slow-${k}`, { signal: ac.signal }),
      );
    }
    default:
      return check("Mounts", [GrpcStatus.FAILED_PRECONDITION], () => client.mounts("base"));
  }
}

const started = performance.now();
let next = 0;
async function worker(): Promise<void> {
  while (issued < total) {
    const i = next++;
    await one(i);
  }
}
await Promise.all(Array.from({ length: Number(values.concurrency) }, worker));
// the server must still answer normally afterwards
await check("Stat", [0], () => client.stat("a0"));
client.close();
const summary = {
  calls: Object.values(byCode).reduce((a, b) => a + b, 0),
  ms: Math.round(performance.now() - started),
  byCode,
  byMethod,
  unexpected: unexpected.slice(0, 20),
  unexpectedCount: unexpected.length,
};
console.log(JSON.stringify(summary));
Deno.exit(unexpected.length === 0 ? 0 : 1);
