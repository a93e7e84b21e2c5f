/**
 * devmapper-snapshotter: a containerd snapshotter on device-mapper thin devices, served as a
 * gRPC proxy plugin over a unix socket.
 *
 * `deno run -A main.ts serve --config FILE --address SOCKET`; see `--help`.
 *
 * @module
 */
import { runCli } from "./src/cli/cli.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
