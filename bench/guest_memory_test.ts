import assert from "node:assert/strict";
import { availableMb, touchGuestMemory } from "./guest_memory.ts";

Deno.test("availableMb reads MemAvailable", () => {
  assert.equal(availableMb("MemTotal: 2048000 kB\nMemAvailable:    1048576 kB\n"), 1024);
  assert.throws(() => availableMb("MemTotal: 1 kB\n"), /no MemAvailable/);
});

Deno.test("touchGuestMemory touches nothing when less than the reserve is available", async () => {
  assert.equal(await touchGuestMemory({ reserveMb: 1 << 30 }), 0);
});
