import assert from "node:assert/strict";
import { errorKind, InvalidArgumentError } from "../util/errors.ts";
import {
  applyUpdate,
  cleanLabels,
  type Labels,
  labelsSize,
  MAX_KEY_SIZE,
  MAX_LABEL_SIZE,
  MAX_LABELS_TOTAL_SIZE,
  utf8Length,
  validateKey,
  validateLabels,
} from "./labels.ts";

function invalid(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${err}`);
    assert.equal(errorKind(err), "invalid_argument");
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("labels: utf8Length agrees with TextEncoder", () => {
  const samples = ["", "a", "é", "牛", "😀", "a😀b", "\ud800", "x\udc00y", "\ud800\ud800", "\0"];
  const enc = new TextEncoder();
  for (const s of samples) assert.equal(utf8Length(s), enc.encode(s).length, JSON.stringify(s));
});

Deno.test("labels: validateLabels accepts the limit exactly and rejects one byte more", () => {
  validateLabels(undefined);
  validateLabels({});
  validateLabels({ a: "" });
  validateLabels({ "containerd.io/gc.root": "2024-01-01T00:00:00Z" });
  const key = "k".repeat(200);
  validateLabels({ [key]: "v".repeat(MAX_LABEL_SIZE - 200) });
  // the message shows 128 bytes of the key and its size
  invalid(
    () => validateLabels({ ok: "1", [key]: "v".repeat(MAX_LABEL_SIZE - 199) }),
    /^Invalid label "k{128}"…\(200 bytes\): key and value length \(4097 bytes\) greater than maximum size \(4096 bytes\)$/,
  );
  // Counted in UTF-8 bytes, not UTF-16 units: 1365 × "牛" = 4095 bytes (+ key "k" = 4096).
  validateLabels({ k: "牛".repeat(1365) });
  invalid(() => validateLabels({ kk: "牛".repeat(1365) }), /"kk".*4097 bytes/);
  // Key alone over the limit.
  invalid(() => validateLabels({ ["x".repeat(4097)]: "" }), /4097 bytes/);
});

Deno.test("labels: all labels of a snapshot together take at most 64 KiB", () => {
  assert.equal(MAX_LABELS_TOTAL_SIZE, 64 * 1024);
  // 16 labels at the per-label maximum: exactly the bound
  const full: Labels = {};
  for (let i = 0; i < 16; i++) full[`k${i.toString(16)}`] = "v".repeat(MAX_LABEL_SIZE - 2);
  assert.equal(labelsSize(full), MAX_LABELS_TOTAL_SIZE);
  validateLabels(full);
  invalid(
    () => validateLabels({ ...full, x: "" }),
    /^Invalid labels: total size of keys and values \(65537 bytes\) greater than maximum size \(65536 bytes\)$/,
  );
  // many small labels count too (the bound is on bytes, however they are split)
  const small: Labels = {};
  for (let i = 0; i < 20_000; i++) small[`l${i}`] = "vv";
  invalid(() => validateLabels(small), /total size of keys and values \(\d+ bytes\)/);
  // UTF-8 bytes, not UTF-16 units
  assert.equal(labelsSize({ "牛": "😀" }), 7);
});

Deno.test("labels: applyUpdate bounds the merged labels, not only the given ones", () => {
  const stored: Labels = {};
  for (let i = 0; i < 15; i++) stored[`k${i.toString(16)}`] = "v".repeat(MAX_LABEL_SIZE - 2);
  // adding one more full label is within the bound (16 × 4096)
  const sixteen = applyUpdate(stored, {
    name: "s",
    labels: { kf: "v".repeat(MAX_LABEL_SIZE - 2) },
    paths: ["labels.kf"],
  });
  assert.equal(labelsSize(sixteen), MAX_LABELS_TOTAL_SIZE);
  // a 17th is not, though the request alone is small
  assert.throws(
    () => applyUpdate(sixteen, { name: "s", labels: { x: "y" }, paths: ["labels.x"] }),
    (err: unknown) => {
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(
        err.message,
        'Invalid labels of snapshot "s" after the update: total size of keys and values ' +
          "(65538 bytes) greater than maximum size (65536 bytes)",
      );
      return true;
    },
  );
  // a snapshot stored over the bound (before it existed) may still shrink, or stay as it is
  const over = { ...sixteen, big: "b".repeat(1000) };
  assert.deepEqual(
    applyUpdate(over, { name: "s", labels: {}, paths: ["labels.big"] }),
    sixteen,
  );
  assert.deepEqual(applyUpdate(over, { name: "s", labels: {}, paths: ["labels.none"] }), over);
  assert.throws(
    () => applyUpdate(over, { name: "s", labels: { more: "x" }, paths: ["labels.more"] }),
    /after the update/,
  );
});

Deno.test("labels: validateLabels rejects empty keys and non-string values", () => {
  invalid(() => validateLabels({ "": "v" }), /^Invalid label: the key must not be empty$/);
  invalid(() => validateLabels({ "": "" }), /must not be empty/);
  invalid(
    () => validateLabels({ a: 1 } as unknown as Labels),
    /^Invalid label "a": the value must be a string$/,
  );
  invalid(() => validateLabels(null as unknown as Labels), /expected a map/);
  invalid(() => validateLabels(["x"] as unknown as Labels), /expected a map/);
});

Deno.test("labels: cleanLabels drops empty values and copies", () => {
  const input = { a: "1", b: "", c: "3" };
  const out = cleanLabels(input);
  assert.deepEqual(out, { a: "1", c: "3" });
  assert.deepEqual(input, { a: "1", b: "", c: "3" });
  out.a = "x";
  assert.equal(input.a, "1");
  assert.deepEqual(cleanLabels(undefined), {});
  assert.deepEqual(cleanLabels({}), {});
});

Deno.test("labels: prototype-ish keys are ordinary labels", () => {
  const given = JSON.parse('{"__proto__":"p","constructor":"c","toString":""}') as Labels;
  const cleaned = cleanLabels(given);
  assert.ok(Object.hasOwn(cleaned, "__proto__"));
  assert.equal(Object.getPrototypeOf(cleaned), Object.prototype);
  assert.deepEqual(Object.keys(cleaned).sort(), ["__proto__", "constructor"]);
  // Masked update of a key the request does not carry must delete it, not read
  // Object.prototype.toString.
  const out = applyUpdate({ toString: "t", hasOwnProperty: "h" }, {
    name: "s",
    labels: {},
    paths: ["labels.toString", "labels.__proto__"],
  });
  assert.deepEqual(Object.keys(out), ["hasOwnProperty"]);
  const set = applyUpdate({}, { name: "s", labels: given, paths: ["labels.__proto__"] });
  assert.deepEqual(Object.entries(set), [["__proto__", "p"]]);
});

// The conformance suite's Update test (spec §2.2 #6), label part.
Deno.test("labels: applyUpdate follows the conformance Update sequence", () => {
  const root = { "containerd.io/gc.root": "now" };
  // No mask: replace everything.
  let labels = applyUpdate(root, {
    name: "a1",
    labels: { l1: "v1", l2: "v2", l3: "v3" },
    paths: [],
  });
  assert.deepEqual(labels, { l1: "v1", l2: "v2", l3: "v3" });
  // Mask labels.l1,labels.l2: l1 set, l2 deleted (absent in the request), l4 ignored.
  labels = applyUpdate(labels, {
    name: "a1",
    labels: { l1: "updated", l4: "v4" },
    paths: ["labels.l1", "labels.l2"],
  });
  assert.deepEqual(labels, { l1: "updated", l3: "v3" });
  // Mask labels: replace everything.
  labels = applyUpdate(labels, { name: "a1", labels: { l4: "v4", l5: "" }, paths: ["labels"] });
  assert.deepEqual(labels, { l4: "v4" });
  // Mask parent: InvalidArgument, nothing changes.
  const before = structuredClone(labels);
  invalid(
    () => applyUpdate(labels, { name: "a1", labels: { x: "y" }, paths: ["parent"] }),
    /^cannot update "parent" field on snapshot "a1"$/,
  );
  assert.deepEqual(labels, before);
});

Deno.test("labels: applyUpdate path semantics", () => {
  const stored = { a: "1", "containerd.io/gc.root": "r", "x.y": "2" };
  const name = "snap";
  // <k> is everything after the first "labels.".
  assert.deepEqual(
    applyUpdate(stored, {
      name,
      labels: { "containerd.io/gc.root": "new" },
      paths: ["labels.containerd.io/gc.root"],
    }),
    { a: "1", "containerd.io/gc.root": "new", "x.y": "2" },
  );
  assert.deepEqual(
    applyUpdate(stored, { name, labels: { "labels.z": "3" }, paths: ["labels.labels.z"] }),
    { ...stored, "labels.z": "3" },
  );
  // "" in the request deletes too.
  assert.deepEqual(applyUpdate(stored, { name, labels: { a: "" }, paths: ["labels.a"] }), {
    "containerd.io/gc.root": "r",
    "x.y": "2",
  });
  // Undefined request labels with no mask: everything goes.
  assert.deepEqual(applyUpdate(stored, { name, labels: undefined, paths: [] }), {});
  // Paths in order: replace, then delete one, then set one.
  assert.deepEqual(
    applyUpdate(stored, {
      name,
      labels: { b: "2", c: "3" },
      paths: ["labels", "labels.b", "labels.a"],
    }),
    { b: "2", c: "3" },
  );
  assert.deepEqual(
    applyUpdate(stored, { name, labels: { a: "9", b: "2" }, paths: ["labels.a", "labels"] }),
    { a: "9", b: "2" },
  );
  // Same path twice, and "labels." (empty key) is a harmless no-op.
  assert.deepEqual(
    applyUpdate(stored, { name, labels: { a: "7" }, paths: ["labels.a", "labels.a", "labels."] }),
    { ...stored, a: "7" },
  );
  // Stored is never modified.
  assert.deepEqual(stored, { a: "1", "containerd.io/gc.root": "r", "x.y": "2" });
});

Deno.test("labels: applyUpdate rejects the whole update for any bad path or label", () => {
  const stored = { a: "1" };
  for (const path of ["name", "kind", "created_at", "updated_at", "Labels", "label.a", "", "x"]) {
    invalid(
      () => applyUpdate(stored, { name: "n", labels: { a: "2" }, paths: ["labels.a", path] }),
      new RegExp(`^cannot update ${JSON.stringify(path).replace(/\./g, "\\.")} field`),
    );
  }
  invalid(
    () => applyUpdate(stored, { name: 'we"ird', labels: {}, paths: ['pa"th'] }),
    /^cannot update "pa\\"th" field on snapshot "we\\"ird"$/,
  );
  // Invalid labels are rejected even when the mask does not select them.
  invalid(
    () =>
      applyUpdate(stored, {
        name: "n",
        labels: { a: "2", big: "x".repeat(MAX_LABEL_SIZE) },
        paths: ["labels.a"],
      }),
    /Invalid label "big"/,
  );
  invalid(() => applyUpdate(stored, { name: "n", labels: { "": "v" }, paths: [] }), /empty/);
  assert.deepEqual(stored, { a: "1" });
});

Deno.test("labels: validateKey", () => {
  for (const what of ["key", "parent", "name"] as const) {
    validateKey("default/1/sha256:abc", what);
    validateKey("x".repeat(MAX_KEY_SIZE), what);
    validateKey("牛".repeat(1365), what); // 4095 bytes
    invalid(
      () => validateKey("x".repeat(MAX_KEY_SIZE + 1), what),
      new RegExp(`^Invalid snapshot ${what} "x{128}"…\\(4097 bytes\\): 4097 bytes is longer`),
    );
    invalid(() => validateKey("牛".repeat(1366), what), /4098 bytes/);
    invalid(
      () => validateKey("a\0b", what),
      new RegExp(`^Invalid snapshot ${what} "a\\\\u0000b": must not contain a NUL character$`),
    );
    invalid(() => validateKey(undefined as unknown as string, what), /expected a string/);
  }
  invalid(() => validateKey("", "key"), /^Invalid snapshot key "": must not be empty$/);
  invalid(() => validateKey("", "name"), /^Invalid snapshot name "": must not be empty$/);
  validateKey("", "parent"); // "" = no parent
});
