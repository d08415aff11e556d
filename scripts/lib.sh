# Shared by the scripts: where the repository and the harness are, and a step logger.
# shellcheck shell=bash
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export repo
export PATH="$HOME/.cargo/bin:$PATH"
# Compiled code lives in the project's cache, so a fresh clone compiles only
# what changed (cargo locks the directory between builds; set
# CARGO_TARGET_DIR to put it elsewhere).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/rave-harness/target}
# The command the scripts run, built by `cargo build -p rave-harness-cli`.
harness=$CARGO_TARGET_DIR/debug/rave-harness
export harness

step() { printf '\n== %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
