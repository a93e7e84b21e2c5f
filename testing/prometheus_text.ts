/**
 * Reads the Prometheus text exposition format in tests: the samples, by name and labels, and
 * the TYPE of each family. Only what our endpoint writes: no timestamps, label values with
 * `\\`, `\"` and `\n` escapes, and values Go's ParseFloat reads (`+Inf`, `NaN`).
 *
 * @module
 */

/** One sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples and `# TYPE` of an exposition. */
export interface Exposition {
  samples: Sample[];
  /** Family name → `counter`, `gauge`, `histogram`, ... */
  types: Map<string, string>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;

/** Parses `text`; throws on a line it cannot read. */
export function parseExposition(text: string): Exposition {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# TYPE (\S+) (\S+)$/.exec(line);
      if (m) types.set(m[1], m[2]);
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`Cannot parse exposition line ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      LABEL.lastIndex = 0;
      let consumed = 0;
      for (let l = LABEL.exec(m[2]); l; l = LABEL.exec(m[2])) {
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
        consumed = LABEL.lastIndex;
      }
      if (consumed !== m[2].length) {
        throw new Error(`Cannot parse labels of ${JSON.stringify(line)}`);
      }
    }
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    samples.push({ name: m[1], labels, value });
  }
  return { samples, types };
}

/** Samples named `name` whose labels include `labels`. */
export function samplesOf(
  exposition: Exposition,
  name: string,
  labels: Record<string, string> = {},
): Sample[] {
  return exposition.samples.filter((s) =>
    s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
}

/** The value of the one sample named `name` with `labels`; throws unless exactly one. */
export function valueOf(
  exposition: Exposition,
  name: string,
  labels: Record<string, string> = {},
): number {
  const found = samplesOf(exposition, name, labels);
  if (found.length !== 1) {
    throw new Error(
      `${found.length} samples of ${name}${JSON.stringify(labels)}, expected one: ${
        JSON.stringify(found)
      }`,
    );
  }
  return found[0].value;
}
