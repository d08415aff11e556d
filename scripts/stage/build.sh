#!/usr/bin/env bash
# The pipeline's build stage: the harness (release) and every profile's image
# the cache lacks.
#   scripts/stage/build.sh
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$repo"

step "setup"
scripts/setup

step "the harness (release)"
cargo build --quiet --release -p rave-harness-cli
echo "$CARGO_TARGET_DIR/release/rave-harness"

step "images (built only when the cache lacks them)"
cargo run --quiet -p rave-harness-cli -- images build --profile all
