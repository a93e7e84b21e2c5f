/**
 * Bytes from hex text as RFCs print them (whitespace and line breaks ignored), for tests that
 * check encoders against published examples.
 *
 * @module
 */

/** The bytes `text` spells in hex; whitespace is ignored. Throws on an odd digit count. */
export function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  if (clean.length % 2 !== 0 || /[^0-9a-f]/i.test(clean)) {
    throw new Error(`Cannot read hex ${JSON.stringify(text)}: not pairs of hex digits`);
  }
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}
