#!/usr/bin/env bash
# Creates the LVM thin pool devmapper-snapshotter runs on, with plain LVM commands: optionally a
# volume group on whole disks, then a thin-pool LV that LVM's own monitoring (dmeventd) grows
# before it fills, and prints the pool's device-mapper name, the value of `pool_name`.
#
# Usage: deploy/lvm-thin-pool.sh [options] VG LV SIZE [DEVICE...]
#
#   VG      volume group; created on DEVICE... (pvcreate, vgcreate) when devices are given,
#           otherwise it must exist
#   LV      name of the thin-pool LV
#   SIZE    data size of the pool, in lvcreate's units (100G = 100 GiB)
#
# Options:
#   --autoextend-threshold N   grow the pool when its data or metadata is N% full (default 80;
#                              100 = never)
#   --autoextend-percent N     by N% of its size each time (default 20)
#   --metadata-size SIZE       metadata LV size (default: LVM's choice for SIZE)
#   --dry-run                  print the commands instead of running them
#
# The autoextend settings live in an LVM metadata profile attached to the pool, written to
# LVM's profile directory (`lvmconfig config/profile_dir`, /etc/lvm/profile unless
# LVM_SYSTEM_DIR or lvm.conf say otherwise) as devmapper-snapshotter-<dm name>.profile.
# New pool blocks are not zeroed (--zero n), like the pools `devmapper-snapshotter pool create`
# makes. The snapshotter's thin devices live in the pool but are not LVM volumes: do not create
# LVM thin volumes in this pool (once LVM has made one, it brings the pool's thin-pool device up
# as <dm name>-tpool, even after they are removed).
#
# Production, as README.md shows it (its commands are this script's `--dry-run` output, checked
# by tests/unit/lvm_script_test.ts; tests/kernel/lvm_pool_test.ts and tests/e2e/lvm_pool_test.ts
# run the script):
#
#   deploy/lvm-thin-pool.sh vg0 containerd-pool 100G /dev/sdb /dev/sdc
set -euo pipefail

usage() {
  sed -n 's/^# \{0,1\}//; 6,18p' "$0" >&2
  exit 2
}

threshold=80
percent=20
metadata_size=
dry_run=false
while (($#)); do
  case "$1" in
    --autoextend-threshold) threshold=${2:?}; shift 2 ;;
    --autoextend-percent) percent=${2:?}; shift 2 ;;
    --metadata-size) metadata_size=${2:?}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) echo "lvm-thin-pool.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
(($# >= 3)) || usage
vg=$1 lv=$2 size=$3
shift 3
devices=("$@")
[[ $threshold =~ ^[0-9]+$ && threshold -ge 50 && threshold -le 100 ]] ||
  { echo "lvm-thin-pool.sh: --autoextend-threshold must be 50..100" >&2; exit 2; }
[[ $percent =~ ^[0-9]+$ && percent -ge 1 ]] ||
  { echo "lvm-thin-pool.sh: --autoextend-percent must be a positive integer" >&2; exit 2; }

export LC_ALL=C
# LVM doubles each hyphen inside the VG and LV names and joins them with one.
pool_name="${vg//-/--}-${lv//-/--}"
profile="devmapper-snapshotter-$pool_name"
# lvmconfig fails on an lvm.conf without any section; LVM's built-in default then applies
profile_dir=$(lvmconfig --typeconfig full config/profile_dir 2>/dev/null |
  sed -n 's/^profile_dir="\(.*\)"$/\1/p') || true
profile_dir=${profile_dir:-${LVM_SYSTEM_DIR:-/etc/lvm}/profile}
profile_text="activation {
  thin_pool_autoextend_threshold = $threshold
  thin_pool_autoextend_percent = $percent
}"

# Runs a command, or prints it with --dry-run: quoted for a shell, an option kept with its
# value, lines continued with a backslash past 96 columns.
run() {
  if ! $dry_run; then
    "$@"
    return
  fi
  local line="" word args=("$@") i
  for ((i = 0; i < ${#args[@]}; i++)); do
    word=$(printf '%q' "${args[i]}")
    if [[ ${args[i]} == --* && $((i + 1)) -lt ${#args[@]} && ${args[i + 1]} != -* ]]; then
      i=$((i + 1))
      word+=" $(printf '%q' "${args[i]}")"
    fi
    if [[ -n $line && $((${#line} + 1 + ${#word})) -gt 96 ]]; then
      echo "$line \\"
      line="  $word"
    else
      line="${line:+$line }$word"
    fi
  done
  echo "$line"
}

if ((${#devices[@]})); then
  run pvcreate "${devices[@]}"
  run vgcreate "$vg" "${devices[@]}"
fi
if $dry_run; then
  printf "cat > %q <<'EOF'\n%s\nEOF\n" "$profile_dir/$profile.profile" "$profile_text"
else
  mkdir -p "$profile_dir"
  printf '%s\n' "$profile_text" >"$profile_dir/$profile.profile"
fi
run lvcreate --type thin-pool --size "$size" ${metadata_size:+--poolmetadatasize "$metadata_size"} \
  --zero n --metadataprofile "$profile" --name "$lv" "$vg"
run lvchange --monitor y "$vg/$lv"
if ! $dry_run; then
  # the pool's own device carries the thin-pool target while LVM has no thin volumes in it
  dmsetup table "$pool_name" | grep -q '^0 [0-9]* thin-pool ' ||
    { echo "lvm-thin-pool.sh: $pool_name is not a thin-pool device" >&2; exit 1; }
fi
echo "# pool_name = \"$pool_name\""
