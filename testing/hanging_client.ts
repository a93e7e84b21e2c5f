/**
 * A client process for disconnect tests: sends `Remove <key>` to the socket and waits for the
 * answer (the test kills this process while the call is in flight).
 *
 * Usage: deno run -A tests/unit/hanging_client.ts <socket> <key>
 *
 * @module
 */
import { connectSnapshots } from "./snapshots_client.ts";

const [socket, key] = Deno.args;
const client = connectSnapshots(socket);
await client.remove(key).catch(() => {});
client.close();
