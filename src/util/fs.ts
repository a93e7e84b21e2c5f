/**
 * Filesystem questions more than one layer asks.
 *
 * {@linkcode pathExists} answers false only for a path that is not there: any other failure
 * (permission denied, a file in place of a directory) is thrown, never taken for absence.
 *
 * @module
 */

/** Options for {@linkcode pathExists}. */
export interface PathExistsOptions {
  /** Ask about a symbolic link itself (`lstat`), not what it points to (`stat`, the default). */
  noFollow?: boolean;
}

/** True when `path` exists; false when it (or, following links, its target) does not. */
export async function pathExists(path: string, options: PathExistsOptions = {}): Promise<boolean> {
  try {
    await (options.noFollow ? Deno.lstat(path) : Deno.stat(path));
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
