import assert from "node:assert/strict";
import { join } from "node:path";
import { readProtoFiles, renderModule, REPO_ROOT } from "../../tools/gen_proto_text.ts";
import { PROTO_FILES } from "./proto_text.ts";

Deno.test("proto_text.ts embeds exactly the files under proto/ (else regenerate it)", async () => {
  const onDisk = await readProtoFiles(join(REPO_ROOT, "proto"));
  assert.deepEqual(
    Object.keys(PROTO_FILES).sort(),
    Object.keys(onDisk),
    "file list drifted: run `deno run -R -W --allow-run tools/gen_proto_text.ts`",
  );
  for (const [name, text] of Object.entries(onDisk)) {
    assert.equal(PROTO_FILES[name], text, `${name} drifted: run tools/gen_proto_text.ts`);
  }
});

Deno.test("renderModule output evaluates back to the same files", async () => {
  const files = { "a/b.proto": 'syntax = "proto3";\n// `back` ${ticks} \\ "quotes"\n' };
  const url = "data:text/typescript," + encodeURIComponent(renderModule(files));
  const mod = await import(url);
  assert.deepEqual(mod.PROTO_FILES, files);
});
