/**
 * A process for durability tests of the metadata store: `deno run -A testing/store_deletes.ts
 * DB durable|lazy|lazy-then-durable N` creates N device rows, then deletes them one transaction
 * each, durably or not (`deleteDevice`'s `durable` option); `lazy-then-durable` then inserts N
 * rows again, one default transaction each. Run under `strace -c` to count fsyncs.
 *
 * @module
 */
import { openStore } from "../src/metadata/store.ts";

const [path, mode, count] = Deno.args;
const store = openStore(path);
const n = Number(count);
const device = (id: number) => ({
  thinId: id,
  name: `pool-dms-${id}`,
  role: "snapshot" as const,
  state: "deleting" as const,
  originId: null,
  sizeBytes: 1 << 20,
  fsType: "ext4",
  templateKey: null,
});
store.transaction(() => {
  for (let id = 1; id <= n; id++) store.insertDevice(device(id));
});
for (let id = 1; id <= n; id++) store.deleteDevice(id, { durable: mode === "durable" });
if (mode === "lazy-then-durable") {
  for (let id = 1; id <= n; id++) store.insertDevice({ ...device(id), state: "ready" });
}
store.close();
