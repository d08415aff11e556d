#!/usr/bin/env bash
# The pipeline's lint stage: formatting, clippy, every shell script of the
# repository (bash -n and shellcheck), the code's shape, and the NixOS side
# (every .nix file parses, the SAFE values evaluate right, and those checks
# can fail; the real module system where a stand-in is assembled).
#   scripts/stage/lint.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$repo"

step "setup"
scripts/setup

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "shell scripts: bash -n and shellcheck"
# Every tracked file named *.sh or whose first line runs bash or sh, so a new script cannot be left out.
mapfile -t shell_scripts < <(git ls-files -z | xargs -0 awk 'FNR == 1 && (FILENAME ~ /\.sh$/ || /^#!.*(bash|[^a-z]sh)([ \t]|$)/) { print FILENAME } { nextfile }')
[ "${#shell_scripts[@]}" -gt 20 ] || die "found only ${#shell_scripts[@]} shell scripts: is this a git checkout?"
for f in "${shell_scripts[@]}"; do bash -n "$f"; done
shellcheck -x "${shell_scripts[@]}"
echo "${#shell_scripts[@]} shell scripts checked"

step "the code's shape: no import loop, no file over 600 lines"
scripts/check-layout

step "the NixOS side: every .nix file parses, the SAFE-mode values evaluate right, and those checks can fail"
scripts/check-nix
scripts/check-nix --self-test
# The real module system, where a stand-in is assembled (nixos/README.md); else "skipped".
scripts/check-nix --deep ${RAVE_NIX_STANDIN:+"$RAVE_NIX_STANDIN"}
if [ -n "${RAVE_NIX_STANDIN:-}" ]; then scripts/check-nix --deep "$RAVE_NIX_STANDIN" --self-test; fi
