# Shared by the scripts: where the repository and the harness are, and a step logger.
# shellcheck shell=bash
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export repo
export PATH="$HOME/.cargo/bin:$PATH"
# Compiled code lives in the project's cache, one directory per checkout:
# a fresh clone at a path built before compiles only what changed. Never one
# directory for all checkouts: cargo judges freshness by mtimes, so one clone
# could run another's binary (and its images/ path). CARGO_TARGET_DIR overrides.
checkout_id=$(printf '%s' "$repo" | sha256sum | cut -c1-12)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rave-harness/target-$checkout_id}
# The harness's cache (images, layers, downloads, saved states): where it
# looks by default (harness/rave/src/settings.rs), for the scripts that fill
# it before the harness is compiled.
rave_cache=${RAVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rave-harness}
export rave_cache
# The command the scripts run, built by `cargo build -p rave-harness-cli`.
harness=$CARGO_TARGET_DIR/debug/rave-harness
export harness

step() { printf '\n== %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
