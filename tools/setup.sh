#!/usr/bin/env bash
# Installs what a fresh Debian 12 (x86-64) machine lacks to build, test and demo this
# project: Debian packages (user-mode Linux kernel, device-mapper, LVM and filesystem tools,
# containerd, runc, a C compiler for the UML ptrace shim, Go with containerd 1.6.20's sources for
# containerd's own snapshotter conformance suite, Prometheus and promtool for the metrics) and
# the pinned Deno from npm.
# Idempotent: installed packages are skipped. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(user-mode-linux kmod dmsetup thin-provisioning-tools lvm2 e2fsprogs xfsprogs
  containerd runc busybox-static gcc libc6-dev util-linux mount
  golang-go golang-github-containerd-containerd-dev strace prometheus)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Deno, pinned in tools/deno/package-lock.json, from the npm registry. (`npm ci` refuses the
# lock file because it records only this platform's optional binary package.)
DENO=tools/deno/node_modules/deno/deno
if ! "$DENO" --version 2>/dev/null | grep -q "^deno 2.8.3 "; then
  (cd tools/deno && npm install --no-save --no-audit --no-fund --loglevel=error)
  # deno's postinstall links the platform binary into place; do it here if scripts did not run
  if ! "$DENO" --version >/dev/null 2>&1; then
    cp tools/deno/node_modules/@deno/linux-x64-glibc/deno "$DENO"
  fi
fi
"$DENO" install --frozen --quiet
"$DENO" --version | head -1
