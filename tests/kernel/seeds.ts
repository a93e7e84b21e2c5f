/**
 * Seeded randomness for kernel tests that replay a run from a seed (the crash and power-cut
 * tests): {@linkcode runSeed} reads a run's seed from the environment (`tests/run.ts` passes
 * `DMSNAP_TEST_*` into the test kernel) or makes a fresh one, and {@linkcode seeded} turns it
 * into choices that are the same for the same seed.
 *
 * @module
 */

/**
 * A 32-bit seed from environment variable `name`, else a fresh random one; `test` names the
 * test in the error when the variable holds something else (e.g. `the crash test`).
 */
export function runSeed(name: string, test: string): number {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return crypto.getRandomValues(new Uint32Array(1))[0];
  const seed = Number(text);
  if (!Number.isSafeInteger(seed) || seed < 0 || seed > 0xffffffff) {
    throw new Error(`Cannot replay ${test}: ${name}=${text} is not a 32-bit seed`);
  }
  return seed;
}

/** xorshift32 from `seed`: `next(n)` is in 0..n-1; the same seed gives the same sequence. */
export function seeded(seed: number): (n: number) => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return (n) => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % n;
  };
}
