#!/usr/bin/env bash
# What a pipeline's test stage runs: doctor, build, run with JUnit and JSON
# into an artifacts folder, then validate the JUnit file against the XSD.
#   scripts/ci-test-stage.sh [--artifacts DIR] [rave-harness run options...]
# e.g. scripts/ci-test-stage.sh --artifacts artifacts --profile p0 --faults
# Artifacts: junit.xml, events.jsonl, summary.txt, doctor.txt.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo"

artifacts=artifacts
if [ "${1:-}" = "--artifacts" ]; then
  [ $# -ge 2 ] || die "--artifacts needs a directory"
  artifacts=$2
  shift 2
fi
mkdir -p "$artifacts"

step "setup"
scripts/setup

step "build the harness"
cargo build --quiet -p rave-harness-cli

step "doctor"
"$harness" doctor | tee "$artifacts/doctor.txt"

step "images"
"$harness" images build --profile all

step "run"
status=0
# With pipefail the pipeline's status is the harness's (tee succeeds); the
# report is validated even when cases failed, then that status is the stage's.
"$harness" run --junit "$artifacts/junit.xml" --json "$artifacts/events.jsonl" "$@" | tee "$artifacts/summary.txt" || status=$?

step "validate the JUnit report"
scripts/validate-junit "$artifacts/junit.xml"
exit "$status"
