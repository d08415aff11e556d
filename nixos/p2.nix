# P2 = P1 plus observability (shared/spec/images.md): Prometheus on
# 127.0.0.1:9090 with the shared scrape configuration and alert rules,
# node exporter on 127.0.0.1:9100, pushgateway on 127.0.0.1:9091, Grafana
# with the Prometheus datasource and the three shared dashboards. SAFE mode
# sets retention, scrape interval and the MemoryMax of Prometheus and Grafana
# (nixos/safe-mode.nix through rave.safeModeValues).
#
# The shared files are used from the repository by path, never copied:
# images/observability/{prometheus.yml.in,alert-rules.yml,dashboards/}.
{
  config,
  lib,
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
    };

    pushgateway = {
      enable = true;
      web.listen-address = "127.0.0.1:9091";
    };
  };
  systemd.services.prometheus.serviceConfig.MemoryMax = v.prometheusMemoryMax;

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
    };
    limits.prometheus = v.prometheusMemoryMax;
  };
}
