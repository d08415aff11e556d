# The profile layers, each on top of the one below: p0 on the base rootfs,
# p1 on p0, p2 on p1. Sourced by build.sh; each function takes the rootfs.
# shellcheck shell=bash disable=SC2154
# Uses from build.sh: $here (this directory), $repo, $stage (artifacts:
# node, vibe-kanban, claude-code-router, the dispatcher), $secrets_plain
# (the plaintext secrets, only on the host, deleted after the build),
# $age_recipient, and SAFE mode's values in $RAVE_RETENTION,
# $RAVE_SCRAPE_INTERVAL and $RAVE_PROMETHEUS_MEMORY_MAX.

layer_p0() {
  local root=$1 files="$here/files/p0"
  in_root() { chroot "$root" "$@"; }

  # The webhook dispatcher from the workspace build, as its own system user.
  in_root useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin webhook
  install -D -m 0755 "$stage/webhook-dispatcher" "$root/usr/local/bin/webhook-dispatcher"
  install -D -m 0644 "$repo/images/webhook-dispatcher/webhook-dispatcher.service" "$root/etc/systemd/system/webhook-dispatcher.service"
  install -D -m 0644 "$files/dispatcher-order.conf" "$root/etc/systemd/system/webhook-dispatcher.service.d/10-rave.conf"

  # PostgreSQL: the cluster started directly, and the dispatcher's role and
  # database made once, here (peer authentication on the local socket: the OS
  # user webhook is role webhook). Single-user mode needs no running server;
  # exit_on_error makes a failed statement fail the build.
  local pg_version
  pg_version=$(pg_version "$root")
  sed "s/@PG_VERSION@/$pg_version/g" "$files/postgresql-cluster.service" \
    >"$root/etc/systemd/system/postgresql@$pg_version-main.service"
  printf 'CREATE ROLE webhook LOGIN;\nCREATE DATABASE webhook OWNER webhook;\n' | pg_single "$root"

  # vibe-kanban (its linux-x64 binary from the npm package) and
  # claude-code-router (on Node 22 from npm), both as agent.
  install -D -m 0755 "$stage/vibe-kanban" "$root/opt/vibe-kanban/vibe-kanban"
  cp -a "$stage/node" "$root/opt/node"
  cp -a "$stage/claude-code-router" "$root/opt/claude-code-router"
  install -d -m 0700 -o "$(agent_uid "$root")" -g users "$root/home/agent/.claude-code-router"
  install -m 0600 -o "$(agent_uid "$root")" -g users "$files/ccr-config.json" "$root/home/agent/.claude-code-router/config.json"
  install -D -m 0644 "$files/vibe-kanban.service" "$root/etc/systemd/system/vibe-kanban.service"
  install -D -m 0644 "$files/claude-code-router.service" "$root/etc/systemd/system/claude-code-router.service"

  # Secrets: only their age-encrypted form is on the disk.
  install -d -m 0700 "$root/etc/rave/secrets"
  local name _owner
  while read -r name _owner; do
    age --encrypt --recipient "$age_recipient" --output "$root/etc/rave/secrets/$name.age" "$secrets_plain/$name"
  done <"$secrets_plain/owners"
  install -m 0600 "$secrets_plain/owners" "$root/etc/rave/secrets/owners"
  install -D -m 0755 "$files/rave-secrets" "$root/usr/local/lib/rave/rave-secrets"
  install -D -m 0644 "$files/rave-secrets.service" "$root/etc/systemd/system/rave-secrets.service"

  # nginx: rave.local on 3002 with TLS from the secrets.
  install -D -m 0644 "$files/rave.local.conf" "$root/etc/nginx/sites-enabled/rave.local.conf"
  install -D -m 0644 "$files/after-secrets.conf" "$root/etc/systemd/system/nginx.service.d/10-rave-secrets.conf"

  in_root systemctl enable rave-secrets.service webhook-dispatcher.service \
    vibe-kanban.service claude-code-router.service nginx.service >/dev/null 2>&1
}

layer_p1() {
  local root=$1 files="$here/files/p1"
  install -D -m 0644 "$files/sshd-hardening.conf" "$root/etc/ssh/sshd_config.d/20-rave-hardening.conf"
  install -D -m 0755 "$files/nftables.conf" "$root/etc/nftables.conf"
  chroot "$root" systemctl enable nftables.service >/dev/null 2>&1
}

layer_p2() {
  local root=$1 files="$here/files/p2" obs="$repo/images/observability"
  local retention=$RAVE_RETENTION scrape=$RAVE_SCRAPE_INTERVAL prometheus_max=$RAVE_PROMETHEUS_MEMORY_MAX
  sed "s/@SCRAPE_INTERVAL@/$scrape/" "$obs/prometheus.yml.in" >"$root/etc/prometheus/prometheus.yml"
  install -D -m 0644 "$obs/alert-rules.yml" "$root/etc/prometheus/rules/rave.yml"
  printf 'ARGS="--web.listen-address=127.0.0.1:9090 --storage.tsdb.retention.time=%s"\n' "$retention" >"$root/etc/default/prometheus"
  install -m 0644 "$files/prometheus-node-exporter.default" "$root/etc/default/prometheus-node-exporter"
  # Services' memory against their MemoryMax, read by node exporter's textfile collector.
  install -D -m 0755 "$obs/unit-memory.sh" "$root/usr/local/lib/rave/unit-memory.sh"
  install -m 0644 "$files/rave-unit-memory.service" "$root/etc/systemd/system/rave-unit-memory.service"
  install -m 0644 "$files/prometheus-pushgateway.default" "$root/etc/default/prometheus-pushgateway"
  install -d "$root/etc/systemd/system/prometheus.service.d"
  printf '[Service]\nMemoryMax=%s\n' "$prometheus_max" >"$root/etc/systemd/system/prometheus.service.d/10-rave-safe-mode.conf"

  # nginx's stub_status on loopback, and the nginx exporter reading it (127.0.0.1:9113).
  install -D -m 0644 "$obs/nginx-status.conf" "$root/etc/nginx/sites-enabled/rave-status.conf"
  install -m 0644 "$files/prometheus-nginx-exporter.default" "$root/etc/default/prometheus-nginx-exporter"
  # The PostgreSQL exporter (127.0.0.1:9187) as role prometheus: peer
  # authentication maps the OS user to it, and it may read the statistics
  # (pg_monitor) and nothing more.
  printf 'CREATE ROLE prometheus LOGIN;\nGRANT pg_monitor TO prometheus;\n' | pg_single "$root"
  install -m 0640 -g "$(awk -F: '$1 == "prometheus" { print $3 }' "$root/etc/group")" \
    "$files/prometheus-postgres-exporter.default" "$root/etc/default/prometheus-postgres-exporter"
  install -D -m 0644 "$files/postgres-exporter-order.conf" "$root/etc/systemd/system/prometheus-postgres-exporter.service.d/10-rave.conf"
  chroot "$root" systemctl enable prometheus.service prometheus-node-exporter.service prometheus-pushgateway.service \
    prometheus-nginx-exporter.service prometheus-postgres-exporter.service rave-unit-memory.service >/dev/null 2>&1
}

# The PostgreSQL version the rootfs has (its newest cluster configuration).
pg_version() {
  find "$1/etc/postgresql" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -n | tail -n 1
}

# Runs the SQL on stdin in the rootfs's cluster in single-user mode (no
# server running); exit_on_error makes a failed statement fail the build.
pg_single() {
  local root=$1 version
  version=$(pg_version "$root")
  chroot "$root" runuser -u postgres -- "/usr/lib/postgresql/$version/bin/postgres" --single \
    -D "/etc/postgresql/$version/main" -c exit_on_error=on -c log_checkpoints=off -c dynamic_shared_memory_type=mmap postgres >/dev/null
}

agent_uid() {
  awk -F: '$1 == "agent" { print $3 }' "$1/etc/passwd"
}
