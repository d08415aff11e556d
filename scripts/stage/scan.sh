#!/usr/bin/env bash
# The pipeline's scan stage, check by check, each saying passed, failed or
# skipped with why; the stage fails when a check that ran failed.
#   scripts/stage/scan.sh [--network]
# - cargo-deny (installed from crates.io when missing): bans, licenses and
#   sources of Cargo.lock against deny.toml. Needs no download.
# - cargo-deny advisories: needs the RustSec database (from github.com), so
#   only with --network; else skipped.
# - npm audit of the npm packages the images carry (their versions read from
#   the debian recipe, so they cannot drift apart), at the design's threshold:
#   SAFE (SAFE=1, the default) fails on high and critical, FULL (SAFE=0) on
#   critical. Where the registry does not answer audit requests (the one
#   these machines reach answers HTTP 405), skipped with that reason.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$repo"

network=0
case "${1:-}" in
  --network) network=1 ;;
  "") ;;
  *) die "unknown option $1: use scripts/stage/scan.sh [--network]" ;;
esac
case "${SAFE:-1}" in
  1) mode=SAFE threshold=high ;;
  0) mode=FULL threshold=critical ;;
  *) die "SAFE=${SAFE}: use 1 (SAFE, the default) or 0 (FULL)" ;;
esac
failed=()
skipped=()

step "setup"
scripts/setup

step "cargo-deny"
if ! command -v cargo-deny >/dev/null; then
  echo "installing cargo-deny from crates.io (cargo install --locked)"
  cargo install --quiet --locked cargo-deny
fi
cargo deny --version

step "cargo deny: bans, licenses, sources (offline)"
cargo deny --offline check --hide-inclusion-graph bans licenses sources || failed+=("cargo deny bans/licenses/sources")

step "cargo deny: advisories"
if [ "$network" = 1 ]; then
  cargo deny check advisories || failed+=("cargo deny advisories")
else
  skipped+=("cargo deny advisories: needs the RustSec database from github.com (scripts/stage/scan.sh --network)")
  echo "skipped: ${skipped[-1]}"
fi

step "npm audit of the images' npm packages ($mode: fails on $threshold and above)"
command -v npm >/dev/null || die "npm is missing: run scripts/setup"
packages=$(sed -n 's/^\(node_package\|vibe_kanban_package\|ccr_package\)=//p' images/debian/build.sh)
[ "$(wc -w <<<"$packages")" -eq 3 ] || die "expected 3 npm packages in images/debian/build.sh, found: $packages"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
deps=$(for p in $packages; do printf '"%s":"%s",' "${p%@*}" "${p##*@}"; done)
printf '{"name":"rave-image-npm","version":"0.0.0","private":true,"dependencies":{%s}}\n' "${deps%,}" >"$tmp/package.json"
echo "packages: $packages"
if ! (cd "$tmp" && timeout 300 npm install --package-lock-only --ignore-scripts --no-fund --no-audit --silent) 2>"$tmp/install.err"; then
  # Without the lock nothing can be audited: a failure to check, not a skip.
  cat "$tmp/install.err" >&2
  failed+=("npm audit: the packages' lock could not be resolved from the registry (see above), so nothing was audited")
else
  # npm audit exits non-zero on any finding and on a refused request alike: the verdict reads its report.
  audit_status=0
  (cd "$tmp" && timeout 300 npm audit --json --omit=dev) >"$tmp/audit.json" 2>"$tmp/audit.err" || audit_status=$?
  echo "npm audit exited $audit_status"
  verdict_status=0
  verdict=$(scripts/npm-audit-verdict "$threshold" <"$tmp/audit.json") || verdict_status=$?
  echo "$verdict"
  case "$verdict_status" in
    0) ;;
    1) failed+=("npm audit: $verdict") ;;
    3) skipped+=("npm audit: ${verdict#skipped: }") ;;
    *) cat "$tmp/audit.err" >&2; failed+=("npm audit: no report could be read (see above)") ;;
  esac
fi

step "scan: summary"
for s in "${skipped[@]}"; do echo "skipped: $s"; done
for f in "${failed[@]}"; do echo "FAILED: $f"; done
[ "${#failed[@]}" -eq 0 ] || exit 1
echo "scan passed (${#skipped[@]} skipped, said above)"
