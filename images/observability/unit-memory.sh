#!/bin/sh
# Each system service's memory use against its MemoryMax, from its cgroup,
# for node exporter's textfile collector:
#   rave_unit_memory_working_set_bytes{unit="NAME.service"}
#       memory.current less the inactive file cache of memory.stat (what the
#       kernel cannot simply drop: cAdvisor's working set), bytes
#   rave_unit_memory_max_bytes{unit="NAME.service"}  memory.max, bytes
# only for the services under system.slice that have a MemoryMax. The alert
# ServiceNearMemoryMax (alert-rules.yml) and System Health's memory panel read
# them. Rewritten whole (renamed into place) every INTERVAL seconds; made by
# rave-unit-memory.service on both image flavors.
#
# Usage: unit-memory.sh DIR [INTERVAL_SECONDS]   (default 15; 0: write once and exit)
# RAVE_UNIT_CGROUPS names another directory of service cgroups (for its test).
# Builtins only in the loop but for mv and sleep: the guest's CPUs are emulated.
set -eu
dir=${1:?usage: unit-memory.sh DIR [INTERVAL_SECONDS]}
interval=${2:-15}
cgroups=${RAVE_UNIT_CGROUPS:-/sys/fs/cgroup/system.slice}
umask 022
nl='
'
while :; do
  used_lines='' max_lines=''
  for unit_dir in "$cgroups"/*.service; do
    { read -r max <"$unit_dir/memory.max" && read -r used <"$unit_dir/memory.current"; } 2>/dev/null || continue
    [ "$max" = max ] && continue
    inactive_file=0
    while read -r key value; do
      if [ "$key" = inactive_file ]; then inactive_file=$value; break; fi
    done 2>/dev/null <"$unit_dir/memory.stat" || continue
    used=$((used > inactive_file ? used - inactive_file : 0))
    unit=${unit_dir##*/}
    case $unit in *[\\\"]*) continue ;; esac
    used_lines="${used_lines}rave_unit_memory_working_set_bytes{unit=\"$unit\"} $used$nl"
    max_lines="${max_lines}rave_unit_memory_max_bytes{unit=\"$unit\"} $max$nl"
  done
  printf '%s\n%s\n%s%s\n%s\n%s' \
    '# HELP rave_unit_memory_working_set_bytes Memory a service uses: its cgroup memory.current less inactive file cache.' \
    '# TYPE rave_unit_memory_working_set_bytes gauge' "$used_lines" \
    '# HELP rave_unit_memory_max_bytes The MemoryMax of a service (its cgroup memory.max).' \
    '# TYPE rave_unit_memory_max_bytes gauge' "$max_lines" >"$dir/.unit-memory.prom.new"
  mv -f "$dir/.unit-memory.prom.new" "$dir/unit-memory.prom"
  [ "$interval" = 0 ] && exit 0
  sleep "$interval"
done
