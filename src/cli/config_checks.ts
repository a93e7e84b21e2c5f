/**
 * What configuration values mean to the rest of the program, checked where the configuration is
 * loaded for use: `pool_name` must be a device-mapper name, `fs_type` a filesystem mkfs makes,
 * and xfs takes no `-E` options and needs a device of at least 300 MiB. The config layer parses;
 * these checks run inside its {@linkcode resolveConfig} so that every problem is still reported
 * at once, each with its key and source.
 *
 * @module
 */
import type { ConfigCheck, KeyProblem } from "../config/config.ts";
import { FS_TYPES, isFsType, MIN_XFS_SIZE } from "../dm/mkfs.ts";
import { validateDeviceName } from "../dm/names.ts";
import { errorMessage } from "../util/errors.ts";

/** The domain checks of a configuration (a {@linkcode ConfigCheck} for `loadConfig`). */
export const checkConfig: ConfigCheck = (config) => {
  const problems: KeyProblem[] = [];
  try {
    validateDeviceName(config.poolName);
  } catch (err) {
    problems.push({ key: "pool_name", message: errorMessage(err) });
  }
  if (!isFsType(config.fsType)) {
    problems.push({
      key: "fs_type",
      message: `unsupported filesystem type ${JSON.stringify(config.fsType)} (use ${
        FS_TYPES.join(", ")
      })`,
    });
  }
  if (config.fsType === "xfs") {
    if (config.fsOptions !== "") {
      problems.push({
        key: "fs_options",
        message: `only used with ext4 and ext2, but fs_type is "xfs"`,
      });
    }
    if (config.baseImageSize > 0 && config.baseImageSize < MIN_XFS_SIZE) {
      problems.push({
        key: "base_image_size",
        message: `xfs needs at least 300MiB, got ${config.baseImageSize} bytes`,
      });
    }
  }
  return problems;
};
