import assert from "node:assert/strict";
import { bindNotifyReceiver } from "../../testing/notify_receiver.ts";
import { NotifyError, notifySystemd, unixAddress } from "./notify.ts";

Deno.test("notify: READY=1 reaches a path socket and an abstract one", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dmsnap-notify-" });
  try {
    for (const address of [`${dir}/notify.sock`, `@dmsnap-notify-${crypto.randomUUID()}`]) {
      using receiver = bindNotifyReceiver(address);
      assert.equal(notifySystemd("READY=1\nSTATUS=serving", { socket: address }), true);
      assert.equal(await receiver.next(), "READY=1\nSTATUS=serving");
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("notify: without NOTIFY_SOCKET nothing is sent and nothing fails", () => {
  const saved = Deno.env.get("NOTIFY_SOCKET");
  Deno.env.delete("NOTIFY_SOCKET");
  try {
    assert.equal(notifySystemd("READY=1"), false);
  } finally {
    if (saved !== undefined) Deno.env.set("NOTIFY_SOCKET", saved);
  }
});

Deno.test("notify: a socket nobody listens on, or no address at all, is a NotifyError", () => {
  assert.throws(
    () => notifySystemd("READY=1", { socket: "/nonexistent/notify.sock" }),
    (e) => e instanceof NotifyError && /sendto: No such file or directory/.test(e.message),
  );
  assert.throws(() => notifySystemd("READY=1", { socket: "@" }), NotifyError);
  assert.throws(() => unixAddress("/" + "x".repeat(107)), /not a unix socket address/);
  assert.equal(unixAddress("/" + "x".repeat(106)).length, 2 + 108);
});
