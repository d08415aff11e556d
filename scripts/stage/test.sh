#!/usr/bin/env bash
# What a pipeline's test stage runs: doctor, build, run with JUnit and JSON
# into an artifacts folder, then validate the JUnit file against the XSD.
#   scripts/stage/test.sh [--artifacts DIR] [rave-harness run options...]
# e.g. scripts/stage/test.sh --artifacts artifacts --profile p0 --faults
# Artifacts: junit.xml, events.jsonl, summary.txt, doctor.txt, and attachments/
# (each red trial's journals and serial log, linked from the JUnit).
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
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
# The harness writes its summary and JUnit on every end of a run, its
# deadline (exit 124) and SIGINT/SIGTERM (128 + the signal) included, and
# that status is the stage's. A SIGTERM or SIGINT sent to this script alone
# (a pipeline's cancel or job timeout) is passed on to the harness, whose
# report is then still validated. The summary goes to a file (a signal to
# the job's process group would end a `tee` before the summary came).
status=0
"$harness" run --junit "$artifacts/junit.xml" --json "$artifacts/events.jsonl" "$@" >"$artifacts/summary.txt" &
harness_pid=$!
trap 'kill -TERM "$harness_pid" 2>/dev/null || echo "stage/test.sh: the harness had already ended" >&2' TERM
trap 'kill -INT "$harness_pid" 2>/dev/null || echo "stage/test.sh: the harness had already ended" >&2' INT
wait "$harness_pid" || status=$?
if [ "$status" -gt 128 ]; then
  # `wait` returns early when a trapped signal arrives: wait for the harness
  # itself (bash keeps the status of a child already gone).
  status=0
  wait "$harness_pid" || status=$?
fi
trap - TERM INT
cat "$artifacts/summary.txt"

step "validate the JUnit report"
if [ ! -s "$artifacts/junit.xml" ]; then
  echo "stage/test.sh: the harness wrote no JUnit report ($artifacts/junit.xml)" >&2
  [ "$status" -ne 0 ] || status=1
elif ! scripts/validate-junit "$artifacts/junit.xml"; then
  # An invalid report fails the stage; a red run keeps its own status.
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
