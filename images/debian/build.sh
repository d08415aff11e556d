#!/usr/bin/env bash
# Builds one debian-flavor rave image from Debian's packages with mmdebstrap.
#
#   images/debian/build.sh --profile p0 --out DIR [--debs-cache DIR]
#
# Writes into DIR (which must not exist yet): vmlinuz, initrd.img, disk.qcow2 and
# manifest.json. The harness (`rave-harness images build`) calls this into a
# temporary directory and renames it into the cache when it succeeds, so a
# half-built image is never mistaken for a finished one.
#
# Needs root (mmdebstrap --mode=root), mmdebstrap, e2fsprogs and qemu-utils.
# Reaches no network but Debian's package registry, through the machine's own
# apt sources file (RAVE_APT_SOURCES, default /etc/apt/sources.list.d/debian.sources).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
profile=""
out=""
debs_cache=""

usage() { echo "usage: $0 --profile p0 --out DIR [--debs-cache DIR]" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    --debs-cache) debs_cache=${2:-}; shift 2 ;;
    *) usage ;;
  esac
done
if [ -z "$profile" ] || [ -z "$out" ]; then usage; fi
case "$profile" in
  p0) ;;
  *) echo "build.sh: profile '$profile' is not built by the debian flavor yet (p0 only)" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "build.sh: must run as root (mmdebstrap --mode=root)" >&2; exit 2; }
for tool in mmdebstrap mkfs.ext4 qemu-img; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool is missing: run scripts/setup" >&2; exit 2; }
done
[ ! -e "$out" ] || { echo "build.sh: $out already exists" >&2; exit 2; }

case "${SAFE:-1}" in
  1) safe_json=true ;;
  0) safe_json=false ;;
  *) echo "build.sh: SAFE=${SAFE} is not valid: use 1 (default) or 0" >&2; exit 2 ;;
esac

sources=${RAVE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -r "$sources" ] || { echo "build.sh: apt sources file $sources not readable (set RAVE_APT_SOURCES)" >&2; exit 2; }

mkdir -p "$out"
rootfs="$out/rootfs"

step() { printf '[build %s] %s\n' "$profile" "$*"; }

packages=(
  systemd systemd-sysv udev dbus libpam-systemd kmod
  linux-image-amd64 initramfs-tools
  openssh-server sudo
  nginx postgresql
  ca-certificates curl iproute2 procps openssl
)
packages_csv=$(IFS=,; echo "${packages[*]}")

cache_hooks=()
if [ -n "$debs_cache" ]; then
  mkdir -p "$debs_cache"
  cache_hooks=(
    --skip=essential/unlink
    --setup-hook="mkdir -p \"\$1\"/var/cache/apt/archives/"
    --setup-hook="sync-in '$debs_cache' /var/cache/apt/archives/"
    --customize-hook="sync-out /var/cache/apt/archives '$debs_cache'"
  )
fi

step "mmdebstrap bookworm (${#packages[@]} packages)"
mmdebstrap --mode=root --variant=minbase --quiet \
  --include="$packages_csv" \
  "${cache_hooks[@]}" \
  --customize-hook="'$here/customize.sh' \"\$1\" '$profile'" \
  bookworm "$rootfs" "$sources"

step "kernel and initrd out for direct boot"
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then
  echo "build.sh: no kernel or initrd in $rootfs/boot" >&2; exit 1
fi
cp "$kernel" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"

pg_version=$(find "$rootfs/etc/postgresql" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)
[ -n "$pg_version" ] || { echo "build.sh: no PostgreSQL cluster in the image" >&2; exit 1; }

step "ext4 root filesystem"
mkfs.ext4 -q -F -L rave-root -d "$rootfs" "$out/disk.raw" 4G
rm -rf "$rootfs"
step "qcow2 disk"
qemu-img convert -O qcow2 "$out/disk.raw" "$out/disk.qcow2"
rm -f "$out/disk.raw"

step "manifest"
cat >"$out/manifest.json" <<JSON
{
  "schema": 1,
  "profile": "$profile",
  "flavor": "debian",
  "safe_mode": $safe_json,
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "disk": "disk.qcow2",
  "kernel_cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet",
  "ssh_user": "agent",
  "ca_cert": null,
  "components": {
    "sshd": { "unit": "ssh.service" },
    "nginx": { "unit": "nginx.service" },
    "postgresql": { "unit": "postgresql@${pg_version}-main.service" }
  },
  "absent": {
    "grafana": "Debian does not package Grafana"
  }
}
JSON
step "done: $out"
