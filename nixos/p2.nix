# P2 = P1 plus observability (shared/spec/images.md): Prometheus on
# 127.0.0.1:9090 with the shared scrape configuration and alert rules,
# node exporter on 127.0.0.1:9100, pushgateway on 127.0.0.1:9091, nginx's
# stub_status on 127.0.0.1:8080 read by the nginx exporter (127.0.0.1:9113),
# the PostgreSQL exporter (127.0.0.1:9187) as a role of its own that may
# only read statistics (pg_monitor, peer authentication), Grafana
# with the Prometheus datasource and the three shared dashboards. SAFE mode
# sets retention, scrape interval and the MemoryMax of Prometheus and Grafana
# (nixos/safe-mode.nix through rave.safeModeValues).
#
# The shared files are used from the repository by path, never copied:
# images/observability/{prometheus.yml.in,alert-rules.yml,nginx-status.conf,dashboards/}.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  v = config.rave.safeModeValues;
  observability = ../images/observability;
  alertRules = observability + "/alert-rules.yml";
  template = builtins.readFile (observability + "/prometheus.yml.in");
  # The template names its rule file as the Debian flavor installs it; here
  # it is the store copy of the same file (promtool checks it at build time).
  debianRulePath = "/etc/prometheus/rules/rave.yml";
  prometheusYml =
    assert lib.assertMsg (lib.hasInfix "@SCRAPE_INTERVAL@" template)
      "images/observability/prometheus.yml.in no longer has @SCRAPE_INTERVAL@: update nixos/p2.nix";
    assert lib.assertMsg (lib.hasInfix debianRulePath template)
      "images/observability/prometheus.yml.in no longer names ${debianRulePath}: update nixos/p2.nix";
    builtins.replaceStrings
      [
        "@SCRAPE_INTERVAL@"
        debianRulePath
      ]
      [
        v.scrapeInterval
        "${alertRules}"
      ]
      template;
in
{
  imports = [ ./p1.nix ];

  rave.profile = lib.mkOverride 998 "p2";

  services.prometheus = {
    enable = true;
    listenAddress = "127.0.0.1";
    port = 9090;
    retentionTime = v.retention;
    # Scrape jobs prometheus, node, pushgateway (honor_labels),
    # webhook-dispatcher; global scrape and evaluation interval from SAFE mode.
    configText = prometheusYml;

    exporters.node = {
      enable = true;
      listenAddress = "127.0.0.1";
      port = 9100;
      # rave-unit-memory's series (below).
      extraFlags = [ "--collector.textfile.directory=/var/lib/rave-unit-memory" ];
    };

    pushgateway = {
      enable = true;
      web.listen-address = "127.0.0.1:9091";
    };

    # Reads the stub_status of images/observability/nginx-status.conf.
    exporters.nginx = {
      enable = true;
      listenAddress = "127.0.0.1";
      port = 9113;
      scrapeUri = "http://127.0.0.1:8080/stub_status";
    };

    # As the OS user postgres-exporter, which peer authentication maps to the
    # role of that name (below), not as the postgres superuser.
    exporters.postgres = {
      enable = true;
      listenAddress = "127.0.0.1";
      port = 9187;
      runAsLocalSuperUser = false;
      dataSourceName = "user=postgres-exporter host=/run/postgresql dbname=postgres sslmode=disable";
    };
  };
  systemd.services.prometheus.serviceConfig.MemoryMax = v.prometheusMemoryMax;

  # Services' memory against their MemoryMax for node exporter's textfile
  # collector (images/observability/unit-memory.sh, as on Debian).
  systemd.services.rave-unit-memory = {
    description = "Services' memory against their MemoryMax, for node exporter";
    wantedBy = [ "multi-user.target" ];
    before = [ "prometheus-node-exporter.service" ];
    path = [ pkgs.coreutils ];
    serviceConfig = {
      ExecStart = "${pkgs.bash}/bin/bash ${observability + "/unit-memory.sh"} /var/lib/rave-unit-memory 15";
      StateDirectory = "rave-unit-memory";
      StateDirectoryMode = "0755";
      Restart = "always";
      RestartSec = 5;
      MemoryMax = "16M";
      CapabilityBoundingSet = "";
      NoNewPrivileges = true;
      PrivateNetwork = true;
      PrivateTmp = true;
      PrivateDevices = true;
      ProtectSystem = "strict";
      ProtectHome = true;
      ProtectKernelTunables = true;
      ProtectControlGroups = true;
    };
  };

  services.nginx.appendHttpConfig = builtins.readFile (observability + "/nginx-status.conf");

  services.postgresql.ensureUsers = [ { name = "postgres-exporter"; } ];
  # The exporter's role may read the statistics (pg_monitor) and nothing more.
  systemd.services.rave-postgres-exporter-role = {
    description = "Grant pg_monitor to the PostgreSQL exporter's role";
    wantedBy = [ "multi-user.target" ];
    requires = [ "postgresql.service" ];
    after = [
      "postgresql.service"
      "postgresql-setup.service"
    ];
    before = [ "prometheus-postgres-exporter.service" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      User = "postgres";
    };
    script = ''
      ${config.services.postgresql.package}/bin/psql -v ON_ERROR_STOP=1 -d postgres -c 'GRANT pg_monitor TO "postgres-exporter"'
    '';
  };
  systemd.services.prometheus-postgres-exporter = {
    requires = [ "rave-postgres-exporter-role.service" ];
    after = [ "rave-postgres-exporter-role.service" ];
  };

  services.grafana.provision = {
    enable = true;
    datasources.settings = {
      apiVersion = 1;
      datasources = [
        {
          name = "Prometheus";
          type = "prometheus";
          # The dashboards and the cases refer to it by this uid.
          uid = "prometheus";
          access = "proxy";
          url = "http://127.0.0.1:9090";
          isDefault = true;
          editable = false;
        }
      ];
    };
    dashboards.settings = {
      apiVersion = 1;
      providers = [
        {
          name = "rave";
          type = "file";
          # Project Health, Agent Performance, System Health.
          options.path = observability + "/dashboards";
          disableDeletion = true;
        }
      ];
    };
  };

  rave.manifest = {
    components = {
      prometheus = "prometheus.service";
      node-exporter = "prometheus-node-exporter.service";
      pushgateway = "pushgateway.service";
      nginx-exporter = "prometheus-nginx-exporter.service";
      postgres-exporter = "prometheus-postgres-exporter.service";
      unit-memory = "rave-unit-memory.service";
    };
    limits.prometheus = v.prometheusMemoryMax;
  };
}
