# Shared by scripts/bench and scripts/bench-boot: a work directory, and
# booting P2 with `boot --keep` to measure it (not a test).
# shellcheck shell=bash
: "${harness:?source scripts/lib.sh before scripts/bench-lib.sh}"
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || echo "bench: boot $pid already gone"; fi
  rm -rf "$work"
}
trap cleanup EXIT

field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
stage() { python3 -c 'import json,sys; print(next(s["at"] for s in json.load(open(sys.argv[1]))["boot_stages"] if s["stage"]==sys.argv[2]))' "$1" "$2"; }
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(a) for a in sys.argv[1:]):.2f}")' "$@"; }

# Boots P2 (or $bench_profile; extra arguments go to `boot`), keeps it up,
# leaves its description in $work/guest.json.
up() {
  rm -f "$work/guest.json"
  "$harness" boot --profile "${bench_profile:-p2}" --keep "$@" >"$work/guest.json" 2>"$work/boot.err" &
  pid=$!
  while [ ! -s "$work/guest.json" ]; do
    kill -0 "$pid" 2>/dev/null || die "boot failed: $(tail -5 "$work/boot.err")"
    sleep 0.2
  done
}
# Stops the guest up() booted.
down() {
  kill -TERM "$pid"
  wait "$pid" || echo "note: boot --keep exited $? after SIGTERM"
  pid=
}
# ssh to the booted guest (after pin), its key and pinned host key given:
# "$@" is the rest of ssh's arguments, its options before the destination.
guest_ssh() {
  ssh -F /dev/null -i "$(field "$work/guest.json" ssh_key)" -p "$(field "$work/guest.json" ssh_port)" \
    -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$work/known_hosts" "$@"
}
# The booted guest's SSH destination.
guest_at() { echo "$(field "$work/guest.json" ssh_user)@127.0.0.1"; }
# Runs a command in the booted guest over SSH (after pin).
guest() { guest_ssh "$(guest_at)" "$@"; }
# Pins the booted guest's host key for guest().
pin() { printf '[127.0.0.1]:%s %s\n' "$(field "$work/guest.json" ssh_port)" "$(field "$work/guest.json" ssh_host_key)" >"$work/known_hosts"; }

# QEMU's peak and current RSS (MiB) of the booted guest: "PEAK CURRENT".
qemu_rss() { awk '/VmHWM/ {h=$2} /VmRSS/ {r=$2} END {printf "%.0f %.0f", h/1024, r/1024}' "/proc/$(field "$work/guest.json" pid)/status"; }
