import assert from "node:assert/strict";
import { errorKind, InvalidArgumentError } from "../util/errors.ts";
import {
  type FieldLookup,
  FilterSyntaxError,
  matchesEverything,
  matchFields,
  parseFilter,
  parseFilters,
} from "./filters.ts";
import { matchInfo, snapshotField } from "../snapshots/match.ts";
import type { Info, Kind } from "../snapshots/types.ts";

const T = { seconds: 1, nanos: 0 };
const ROOT = "containerd.io/gc.root";

function snap(name: string, kind: Kind, parent: string, labels: Record<string, string>): Info {
  return { name, kind, parent, labels, created: T, updated: T };
}

/** The eight snapshots of containerd's Walk conformance test (spec §2.2 #8). */
const WALK: Info[] = [
  snap("a-np", "active", "", { [ROOT]: "check-walk" }),
  snap("p", "committed", "", { [ROOT]: "check-walk" }),
  snap("a", "active", "p", { [ROOT]: "check-walk" }),
  snap("v", "view", "p", { [ROOT]: "check-walk" }),
  snap("p-wl", "committed", "", { l: "1", [ROOT]: "check-walk" }),
  snap("a-wl", "active", "p-wl", { l: "2", [ROOT]: "check-walk" }),
  snap("v-wl", "view", "p-wl", { l: "3", [ROOT]: "check-walk" }),
  snap("a-np-wl", "active", "", { l: "2", [ROOT]: "check-walk" }),
];
const ALL = WALK.map((i) => i.name);

function walk(filters: string[], items: Info[] = WALK): string[] {
  const filter = parseFilters(filters);
  return items.filter((info) => matchInfo(filter, info)).map((i) => i.name).sort();
}

function assertWalk(filters: string[], want: string[], items: Info[] = WALK): void {
  assert.deepEqual(walk(filters, items), [...want].sort(), JSON.stringify(filters));
}

Deno.test("filters: the ten Walk conformance cases", () => {
  const cases: Array<[string[], string[]]> = [
    [['labels."containerd.io/gc.root"==check-walk'], ALL],
    [['kind==active,labels."containerd.io/gc.root"==check-walk'], [
      "a-np",
      "a",
      "a-wl",
      "a-np-wl",
    ]],
    [['kind==view,labels."containerd.io/gc.root"==check-walk'], ["v", "v-wl"]],
    [['kind==committed,labels."containerd.io/gc.root"==check-walk'], ["p", "p-wl"]],
    [["name==p", "name==a-np-wl"], ["p", "a-np-wl"]],
    [["name==a-wl,labels.l"], ["a-wl"]],
    [["parent==p"], ["a", "v"]],
    [['parent!="",labels."containerd.io/gc.root"==check-walk'], ["a", "v", "a-wl", "v-wl"]],
    [["labels.l"], ["p-wl", "a-wl", "v-wl", "a-np-wl"]],
    [["labels.l==2"], ["a-wl", "a-np-wl"]],
  ];
  for (const [filters, want] of cases) assertWalk(filters, want);
});

Deno.test("filters: match-all forms", () => {
  assertWalk([], ALL);
  assertWalk([""], ALL);
  assertWalk(["", "name==nothing"], ALL);
  assertWalk(["name==nothing", ""], ALL);
  assert.ok(matchesEverything(parseFilters([])));
  assert.ok(matchesEverything(parseFilters(["name==x", ""])));
  assert.ok(!matchesEverything(parseFilters(["name==x"])));
  assert.deepEqual(parseFilters([]), { clauses: [[]], source: [] });
  assert.deepEqual(parseFilter(""), []);
  // Presence of fields that are always present.
  assertWalk(["name"], ALL);
  assertWalk(["parent"], ALL);
  assertWalk(["kind"], ALL);
  // Absent fields.
  assertWalk(["labels"], []);
  assertWalk(["created"], []);
  assertWalk(["Name==p"], []);
});

Deno.test("filters: snapshot adaptor", () => {
  const info = snap("n", "view", "par", { "a.b": "1", x: "2", "": "empty-key" });
  assert.equal(snapshotField(info, ["kind"]), "view");
  assert.equal(snapshotField(info, ["kind", "x"]), "view");
  assert.equal(snapshotField(info, ["name"]), "n");
  assert.equal(snapshotField(info, ["name", "whatever"]), "n");
  assert.equal(snapshotField(info, ["parent"]), "par");
  assert.equal(snapshotField(info, ["labels", "a", "b"]), "1");
  assert.equal(snapshotField(info, ["labels", "a.b"]), "1");
  assert.equal(snapshotField(info, ["labels", "x"]), "2");
  assert.equal(snapshotField(info, ["labels", "y"]), undefined);
  assert.equal(snapshotField(info, ["labels"]), "empty-key");
  assert.equal(snapshotField(info, []), undefined);
  assert.equal(snapshotField(info, ["id"]), undefined);
  assert.equal(snapshotField(snap("n", "active", "", {}), ["parent"]), "");
  assert.equal(snapshotField({ ...info, kind: "bogus" as Kind }, ["kind"]), undefined);
  // Inherited object properties are not labels.
  for (const key of ["constructor", "toString", "__proto__", "hasOwnProperty"]) {
    assert.equal(snapshotField(info, ["labels", key]), undefined, key);
  }
  const proto = JSON.parse('{"__proto__":"p"}') as Record<string, string>;
  assert.equal(snapshotField(snap("n", "active", "", proto), ["labels", "__proto__"]), "p");
  assertWalk(['labels."__proto__"==p'], ["n"], [snap("n", "active", "", proto)]);
  assertWalk(["labels.constructor"], [], [snap("n", "active", "", {})]);
});

Deno.test("filters: operators", () => {
  assertWalk(["kind==active"], ["a-np", "a", "a-wl", "a-np-wl"]);
  assertWalk(["kind!=active"], ["p", "v", "p-wl", "v-wl"]);
  assertWalk(["kind==Active"], []);
  // != treats an absent field as "".
  assertWalk(["labels.l!=2"], ["a-np", "p", "a", "v", "p-wl", "v-wl"]);
  assertWalk(['labels.l!=""'], ["p-wl", "a-wl", "v-wl", "a-np-wl"]);
  assertWalk(['parent==""'], ["a-np", "p", "p-wl", "a-np-wl"]);
  // == needs presence: "" does not equal an absent label.
  assertWalk(['labels.l==""'], []);
  // ~= is an unanchored search, against "" when absent.
  assertWalk(["name~=^a-"], ["a-np", "a-wl", "a-np-wl"]);
  assertWalk(["name~=wl"], ["p-wl", "a-wl", "v-wl", "a-np-wl"]);
  assertWalk(["name~=/^(a|v)$/"], ["a", "v"]);
  assertWalk(["name~=|-wl$|"], ["p-wl", "a-wl", "v-wl", "a-np-wl"]);
  assertWalk(['name~="^p"'], ["p", "p-wl"]);
  assertWalk(["name~=(?i)^P$"], ["p"]);
  assertWalk(["labels.l~=^$"], ["a-np", "p", "a", "v"]);
  assertWalk(["labels.l~=[23]"], ["a-wl", "v-wl", "a-np-wl"]);
  assertWalk(["name~=^a-np"], ["a-np", "a-np-wl"]);
  assertWalk(["name~=^a-np$", "name~=^v$"], ["a-np", "v"]);
  assertWalk(["kind==active,labels.l==2,parent==p-wl"], ["a-wl"]);
  assertWalk(["kind==active,name==p"], []);
});

/** Matches a single item given as a flat field map (keys joined with "."). */
function item(fields: Record<string, string>): FieldLookup {
  return (path) => Object.hasOwn(fields, path.join(".")) ? fields[path.join(".")] : undefined;
}

function matches(filter: string, fields: Record<string, string>): boolean {
  return matchFields(parseFilters([filter]), item(fields));
}

Deno.test("filters: values", () => {
  // Unquoted values keep punctuation, backslashes and non-ASCII.
  assert.deepEqual(parseFilter("labels.foo==omg_asdf.asdf-qwer")[0].value, "omg_asdf.asdf-qwer");
  assert.equal(parseFilter("a==b=c!d~e")[0].value, "b=c!d~e");
  assert.equal(parseFilter('a==p"')[0].value, 'p"');
  assert.equal(parseFilter("a==x/y|z")[0].value, "x/y|z");
  assert.equal(parseFilter("a==牛")[0].value, "牛");
  assert.equal(parseFilter("a==?fbaq")[0].value, "?fbaq");
  assert.equal(parseFilter("a==@")[0].value, "@");
  assert.equal(parseFilter("a~=[abc]\\+")[0].value, "[abc]\\+");
  assert.ok(matches("a~=x\\.y", { a: "x.y" }));
  assert.ok(!matches("a~=x\\.y", { a: "xzy" }));
  // A value stops at whitespace and ",".
  assert.equal(parseFilter("a==b ,c")[0].value, "b");
  assert.deepEqual(parseFilter("a==b,c").map((s) => s.fieldpath), [["a"], ["c"]]);
  // Quoted values.
  assert.equal(parseFilter('other=="too complex, yo"')[0].value, "too complex, yo");
  assert.ok(matches('other=="too complex, yo"', { other: "too complex, yo" }));
  assert.equal(parseFilter('a==""')[0].value, "");
  assert.equal(parseFilter('a=="\\a\\b\\f\\n\\r\\t\\v\\\\\\""')[0].value, '\x07\b\f\n\r\t\v\\"');
  assert.equal(parseFilter('a=="\\101\\x42\\u0043\\U00000044"')[0].value, "ABCD");
  assert.equal(parseFilter('a=="\\xc3\\xa9\\303\\251\\u00e9"')[0].value, "ééé");
  assert.equal(parseFilter('a=="\\U0001F600"')[0].value, "😀");
  assert.equal(parseFilter('a=="\\ud800"')[0].value, "\ufffd");
  assert.equal(parseFilter('a=="/|"')[0].value, "/|");
  assert.equal(parseFilter("a~=/\\//")[0].value, "/");
  assert.equal(parseFilter("a~=|x\\|y|")[0].value, "x|y");
  assert.equal(parseFilter('a~=/"/')[0].value, '"');
  assert.equal(parseFilter('a~=/[abc]{0,1}"\\//')[0].value, '[abc]{0,1}"/');
  assert.ok(matches("a~=/a\\\\.b/", { a: "a.b" }));
  assert.ok(!matches("a~=/a\\\\.b/", { a: "axb" }));
  assert.ok(matches("a~=/[abc]{1,2}/,name!=foo", { a: "too complex, yo", name: "baz" }));
});

Deno.test("filters: field paths", () => {
  assert.deepEqual(parseFilter("labels.foo")[0], {
    fieldpath: ["labels", "foo"],
    operator: "present",
    value: "",
  });
  assert.deepEqual(parseFilter('labels."containerd.io/gc.root"==x')[0].fieldpath, [
    "labels",
    "containerd.io/gc.root",
  ]);
  assert.deepEqual(parseFilter('"leading quote".postquote==value')[0].fieldpath, [
    "leading quote",
    "postquote",
  ]);
  assert.deepEqual(parseFilter('labels."more complex label with \\\\ and \\"".post')[0].fieldpath, [
    "labels",
    'more complex label with \\ and "',
    "post",
  ]);
  assert.deepEqual(parseFilter("a.B_1.9")[0].fieldpath, ["a", "B_1", "9"]);
  assert.deepEqual(parseFilter('labels."\\xc3\\xa9"')[0].fieldpath, ["labels", "é"]);
  // Multi-segment label keys are re-joined with ".".
  const items = [
    snap("dotted", "active", "", { "a.b": "1" }),
    snap("quoted", "active", "", { 'we"ird\\key': "x", "tab\tkey": "t", "é": "e" }),
  ];
  assertWalk(["labels.a.b==1"], ["dotted"], items);
  assertWalk(['labels."a.b"==1'], ["dotted"], items);
  assertWalk(['labels."a".b==1'], ["dotted"], items);
  assertWalk(['labels."we\\"ird\\\\key"==x'], ["quoted"], items);
  assertWalk(['labels."tab\\tkey"==t'], ["quoted"], items);
  assertWalk(['labels."\\u00e9"==e', 'labels."\\303\\251"'], ["quoted"], items);
});

Deno.test("filters: whitespace between tokens is skipped", () => {
  assertWalk(["  name == p  ,  kind == committed  "], ["p"]);
  assertWalk(["labels . l == 2"], ["a-wl", "a-np-wl"]);
  assertWalk(["\tname\n==\r\np\u00a0"], ["p"]);
  assertWalk(["labels.l ", " labels.l"], ["p-wl", "a-wl", "v-wl", "a-np-wl"]);
  assertWalk(['parent != "" , kind == view'], ["v", "v-wl"]);
});

interface ErrorCase {
  input: string;
  message: string;
  position?: number;
}

/** Malformed filters and containerd's exact message for each. */
const ERRORS: ErrorCase[] = [
  { input: "name==foo,", message: "[name==foo,]: expected field or quoted", position: 10 },
  { input: "labels.", message: "[labels.]: expected field or quoted", position: 7 },
  {
    input: "labels.|foo|==omg_asdf.asdf-qwer",
    message: "[labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
    position: 7,
  },
  {
    input: 'labels.?"more complex label with \\\\ and \\"".post==present',
    message:
      '[labels. >|?|< "more complex label with \\\\ and \\"".post==present]: expected field or quoted',
  },
  {
    input: "image~=,id?=?fbaq",
    message: "[image~= >|,|< id?=?fbaq]: expected value or quoted",
    position: 7,
  },
  {
    input: "labels.ns/key==value",
    message: "[labels.ns >|/|< key==value]: quoted literal not terminated",
  },
  {
    input: "labels.key==/value",
    message: "[labels.key== >|/|< value]: quoted literal not terminated",
  },
  {
    input: "labels.containerd.io/key==value",
    message: "[labels.containerd.io >|/|< key==value]: quoted literal not terminated",
  },
  { input: ",name", message: "[ >|,|< name]: expected field or quoted", position: 0 },
  { input: "   ", message: "[   ]: expected field or quoted", position: 3 },
  { input: "name==p,,kind", message: "[name==p, >|,|< kind]: expected field or quoted" },
  { input: "name=p", message: '[name >|=|< p]: unsupported operator "="', position: 4 },
  { input: "name===p", message: '[name >|=|< ==p]: unsupported operator "==="' },
  { input: "name!p", message: '[name >|!|< p]: unsupported operator "!"' },
  { input: "name~p", message: '[name >|~|< p]: unsupported operator "~"' },
  { input: "name p", message: '[name  >|p|< ]: expected an operator ("=="|"!="|"~=")' },
  { input: 'name"p"', message: '[name >|"|< p"]: expected an operator ("=="|"!="|"~=")' },
  { input: "name==", message: "[name==]: expected value or quoted", position: 6 },
  { input: "name== ", message: "[name== ]: expected value or quoted", position: 7 },
  { input: "name==,kind", message: "[name== >|,|< kind]: expected value or quoted" },
  { input: "name==.x", message: "[name== >|.|< x]: expected value or quoted" },
  { input: "name==!x", message: '[name >|=|< =!x]: unsupported operator "==!"' },
  { input: "name== !x", message: "[name==  >|!|< x]: expected value or quoted" },
  { input: "name==/p/", message: "[name== >|/|< p/]: invalid quote encountered" },
  { input: "name!=|p|", message: "[name!= >|||< p|]: invalid quote encountered" },
  { input: 'name=="p', message: '[name== >|"|< p]: quoted literal not terminated' },
  { input: 'labels."a\nb"==x', message: "quoted literal not terminated", position: 7 },
  { input: 'labels."\\g"', message: '[labels. >|"|< \\g"]: illegal escape sequence' },
  { input: 'labels."\\\'"', message: "illegal escape sequence" },
  { input: 'labels."\\/"', message: "illegal escape sequence" },
  { input: "a~=/a\\.b/", message: "[a~= >|/|< a\\.b/]: illegal escape sequence" },
  { input: "a~=|a\\/b|", message: "illegal escape sequence" },
  { input: 'labels."\\g', message: "quoted literal not terminated" },
  { input: 'labels."\\xaz"', message: '[labels. >|"|< \\xaz"]: illegal numeric escape sequence' },
  { input: 'labels."\\08"', message: "illegal numeric escape sequence" },
  { input: 'labels."\\u12"', message: "illegal numeric escape sequence" },
  { input: 'labels."\\U0010FFF"', message: "illegal numeric escape sequence" },
  { input: 'labels."\\777"', message: "unquoting failed: quote syntax error" },
  { input: 'labels."\\U00110000"', message: "unquoting failed: quote syntax error" },
  { input: 'labels."\\xff"', message: "unquoting failed: invalid UTF-8" },
  { input: "name==p q", message: "[name==p  >|q|< ]: unexpected input: q", position: 8 },
  { input: 'name=="p"q', message: '[name=="p" >|q|< ]: unexpected input: q' },
  { input: "labels .l x", message: "[labels .l  >|x|< ]: expected an operator" },
  { input: "labels .l==1 x", message: "[labels .l==1  >|x|< ]: unexpected input: x" },
  { input: "name==a\0b", message: "unexpected null", position: 7 },
  { input: '"\0"', message: "unexpected null", position: 1 },
  { input: "😀==x", message: "[ >|😀|< ==x]: expected field or quoted" },
  { input: "labels.é", message: "[labels. >|é|< ]: expected field or quoted" },
  { input: "name~=(", message: "[name~= >|(|< ]: error parsing regexp: missing closing ): `(`" },
  { input: "name~=/[/", message: "error parsing regexp: missing closing ]: `[`" },
  { input: "name~=a**", message: "error parsing regexp: invalid nested repetition operator: `**`" },
  { input: "name~=(?=x)", message: "invalid or unsupported Perl syntax" },
  { input: "name~=\\8", message: "invalid escape sequence" },
];

Deno.test("filters: malformed filters → FilterSyntaxError (InvalidArgument) with the position", () => {
  for (const { input, message, position } of ERRORS) {
    assert.throws(() => parseFilters(["name==ok", input]), (err: unknown) => {
      assert.ok(err instanceof FilterSyntaxError, `${JSON.stringify(input)}: ${err}`);
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(errorKind(err), "invalid_argument");
      assert.equal(err.name, "FilterSyntaxError");
      assert.equal(err.input, input);
      assert.ok(err.message.startsWith("filters: parse error: ["), err.message);
      assert.ok(
        err.message.includes(message),
        `${JSON.stringify(input)}: ${JSON.stringify(err.message)} lacks ${JSON.stringify(message)}`,
      );
      assert.ok(err.message.endsWith(err.reason));
      if (position !== undefined) assert.equal(err.position, position, JSON.stringify(input));
      return true;
    }, JSON.stringify(input));
  }
});

Deno.test("filters: regex errors keep their cause", () => {
  try {
    parseFilter("name~=[");
    assert.fail("no error");
  } catch (err) {
    assert.ok(err instanceof FilterSyntaxError);
    assert.equal(err.position, 6);
    assert.equal((err.cause as Error).name, "Re2SyntaxError");
  }
});

/** Tiny deterministic PRNG so the fuzz test is reproducible. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

Deno.test("filters: arbitrary input parses or fails with FilterSyntaxError only", () => {
  const rand = rng(1234);
  const pieces = [
    "name",
    "labels",
    "l",
    ".",
    ",",
    "==",
    "!=",
    "~=",
    "=",
    '"',
    "/",
    "|",
    "\\",
    "x",
    "2",
    " ",
    "\n",
    "\\x",
    "\\u00",
    "é",
    "😀",
    "(",
    "[",
    "*",
    "\0",
  ];
  let parsed = 0;
  for (let n = 0; n < 20000; n++) {
    let s = "";
    const len = Math.floor(rand() * 10);
    for (let i = 0; i < len; i++) s += pieces[Math.floor(rand() * pieces.length)];
    try {
      const filter = parseFilters([s]);
      parsed++;
      for (const info of WALK) matchInfo(filter, info);
    } catch (err) {
      assert.ok(err instanceof FilterSyntaxError, `${JSON.stringify(s)}: ${err}`);
      assert.ok(err.position >= 0 && err.position <= s.length);
    }
  }
  assert.ok(parsed > 1000, `only ${parsed} parsed`);
});
