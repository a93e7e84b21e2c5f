/**
 * Human-readable sizes, 1024-based, with the rules of docker/go-units `RAMInBytes` (spec §3.1):
 * a decimal number, an optional single space, then an optional case-insensitive unit
 * `b`, or `k`/`m`/`g`/`t`/`p` optionally followed by `b` or `ib`. A bare number is bytes;
 * fractions are truncated to whole bytes. `"16Mb"` = 16 MiB, `"10GB"` = 10 GiB, `"1.5g"` =
 * 1.5 GiB.
 *
 * @module
 */
import { InvalidArgumentError } from "./errors.ts";

const MULTIPLIERS: Readonly<Record<string, number>> = {
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

/**
 * Parses a size into bytes. Throws {@linkcode InvalidArgumentError} with `invalid size: '<text>'`
 * or `invalid suffix: '<suffix>'`.
 */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d*)?|\.\d+) ?([a-zA-Z]*)$/.exec(text);
  if (!m) throw new InvalidArgumentError(`invalid size: '${text}'`);
  const value = Number(m[1]);
  const suffix = m[2].toLowerCase();
  let multiplier = 1;
  if (suffix !== "" && suffix !== "b") {
    const unit = MULTIPLIERS[suffix[0]];
    const rest = suffix.slice(1);
    if (unit === undefined || !(rest === "" || rest === "b" || rest === "ib")) {
      throw new InvalidArgumentError(`invalid suffix: '${suffix}'`);
    }
    multiplier = unit;
  }
  const bytes = Math.trunc(value * multiplier);
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(`invalid size: '${text}': too large`);
  }
  return bytes;
}

/** Formats bytes with the largest binary unit that divides them exactly, e.g. `10GiB`, `1536MiB`, `7B`. */
export function formatSize(bytes: number): string {
  for (
    const [unit, mul] of [["PiB", 1024 ** 5], ["TiB", 1024 ** 4], ["GiB", 1024 ** 3], [
      "MiB",
      1024 ** 2,
    ], ["KiB", 1024]] as const
  ) {
    if (bytes >= mul && bytes % mul === 0) return `${bytes / mul}${unit}`;
  }
  return `${bytes}B`;
}
