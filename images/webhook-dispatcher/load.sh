#!/usr/bin/env bash
# Load test of the webhook dispatcher (not a timed test): a throwaway
# PostgreSQL, the release build of the dispatcher, N concurrent signed
# webhooks with a share of redeliveries; then every distinct event must be
# stored exactly once. Prints requests per second and p50/p99 latency.
#
#   images/webhook-dispatcher/load.sh [REQUESTS] [REDELIVERED_SHARE] [CONCURRENCY]
set -euo pipefail
requests=${1:-10000}
share=${2:-0.2}
concurrency=${3:-32}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"

pg_bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort | tail -n 1)
[ -x "$pg_bin/initdb" ] || { echo "load.sh: no PostgreSQL server: run scripts/setup" >&2; exit 2; }

work=$(mktemp -d /tmp/dispatcher-load-XXXXXX)
pg_pid=""
dispatcher_pid=""
# Stops what runs, in reverse order, each within 10 s: the dispatcher first
# (it holds connections), then PostgreSQL with a fast shutdown (SIGINT).
stop() {
  local pid=$1 signal=$2
  [ -n "$pid" ] || return 0
  kill "-$signal" "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || return 0
}
cleanup() {
  stop "$dispatcher_pid" TERM
  stop "$pg_pid" INT
  rm -rf "$work"
}
trap cleanup EXIT

as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$work"
  as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/data" --auth=trust -U postgres --no-sync -E UTF8 >/dev/null
"${as_pg[@]}" "$pg_bin/postgres" -D "$work/data" -k "$work" -p 5432 -c listen_addresses= -c max_connections=100 >"$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 1 100); do "$pg_bin/pg_isready" -q -h "$work" -p 5432 && break; sleep 0.1; done
"$pg_bin/pg_isready" -q -h "$work" -p 5432 || { echo "load.sh: PostgreSQL did not start" >&2; cat "$work/pg.log" >&2; exit 1; }

(cd "$repo" && cargo build --quiet --release -p webhook-dispatcher)
printf 'load-test-secret' >"$work/secret"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn "${CARGO_TARGET_DIR:-$repo/target}/release/webhook-dispatcher" --listen "127.0.0.1:$port" --secret-file "$work/secret" \
  --database "host=$work port=5432 user=postgres dbname=postgres" >"$work/dispatcher.log" 2>&1 &
dispatcher_pid=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break; sleep 0.1; done

"${CARGO_TARGET_DIR:-$repo/target}/release/webhook-load" --url "http://127.0.0.1:$port/webhook" --secret-file "$work/secret" \
  --requests "$requests" --redeliveries "$share" --concurrency "$concurrency" --keys-out "$work/sent-keys"

psql=("$pg_bin/psql" -X -At -h "$work" -p 5432 -U postgres -d postgres)
"${psql[@]}" -c "SELECT delivery_key FROM webhook_events ORDER BY 1" >"$work/stored-keys"
sort -o "$work/sent-keys" "$work/sent-keys"
sent=$(wc -l <"$work/sent-keys")
stored=$(wc -l <"$work/stored-keys")
lost=$(comm -23 "$work/sent-keys" "$work/stored-keys" | wc -l)
duplicated=$(uniq -d "$work/stored-keys" | wc -l)
unexpected=$(comm -13 "$work/sent-keys" "$work/stored-keys" | wc -l)
echo "distinct events sent $sent, rows stored $stored, lost $lost, duplicated $duplicated, unexpected $unexpected"
if [ "$lost" -ne 0 ] || [ "$duplicated" -ne 0 ] || [ "$unexpected" -ne 0 ]; then
  echo "load.sh: FAILED" >&2
  exit 1
fi
echo "load.sh: every distinct event stored exactly once"
