import assert from "node:assert/strict";
import { createLogger } from "../util/log.ts";
import { POOL_HELP, runPoolCommand } from "./pool_cmd.ts";
import { UsageError } from "./usage.ts";

const ctx = {
  logger: () => createLogger({ level: "error", write: () => {} }),
  stdout: () => {},
};

async function usageError(args: string[], message: RegExp): Promise<void> {
  await assert.rejects(runPoolCommand(args, ctx), (e: unknown) => {
    assert.ok(e instanceof UsageError, `${args.join(" ")}: ${e}`);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("pool --lvm: flags of the other kind of pool are usage errors, before anything runs", async () => {
  await usageError(
    ["create", "--lvm", "vg0", "--dir", "/x"],
    /^pool create: --dir does not apply to LVM pools \(--lvm\)$/,
  );
  await usageError(
    ["destroy", "--lvm", "vg0", "--dir", "/x"],
    /^pool destroy: --dir does not apply to LVM pools \(--lvm\)$/,
  );
  await usageError(
    ["create", "--autoextend-threshold", "90"],
    /^pool create: --autoextend-threshold applies to LVM pools only \(--lvm\)$/,
  );
  await usageError(
    ["create", "--lvm", "vg0", "--autoextend-percent", "5.5"],
    /^pool create: --autoextend-percent: "5\.5" is not a whole number$/,
  );
  await usageError(["create", "--lvm", "vg0", "--block-size", "1000"], /--block-size: 1000 bytes/);
  await usageError(["create", "--lvm", "vg0", "--data-size", "lots"], /--data-size: invalid size/);
  await usageError(["status", "--lvm"], /pool status: option '--lvm <value>' argument missing/);
  for (const flag of ["--lvm VG", "--autoextend-threshold N", "--autoextend-percent N"]) {
    assert.ok(POOL_HELP.includes(flag), flag);
  }
});
