# P0, the development base (shared/spec/images.md): nginx on 0.0.0.0:3002
# (TLS, vhost rave.local, security headers) in front of vibe-kanban,
# claude-code-router, the webhook dispatcher and Grafana; PostgreSQL for
# Grafana and the dispatcher; sshd. Secrets come from sops-nix: encrypted at
# rest in the image, decrypted at boot into /run/secrets (tmpfs, 0400, owned
# by the reader) with the age identity QEMU hands over through fw_cfg.
{
  config,
  lib,
  pkgs,
  sops-nix,
  ravePackages,
  ...
}:
let
  cfg = config.rave;
  # From the flake (specialArgs): nixos/packages built with its Rust toolchain.
  rave = ravePackages;
  secretsPkg = rave.rave-secrets;
  ccrConfig = ../images/debian/files/p0/ccr-config.json;
  # The secrets and who reads them (nginx runs as user nginx on NixOS, master
  # process included, so it owns the TLS files; the Debian flavor's root-run
  # nginx master reads them as root).
  secretOwners = {
    tls-cert = "nginx";
    tls-key = "nginx";
    webhook-gitlab-secret = "webhook";
    grafana-secret-key = "grafana";
    grafana-admin-password = "grafana";
  };
in
{
  imports = [
    ./base.nix
    ./webhook-dispatcher.nix
    # sops.* is set below, so its module is imported here.
    sops-nix.nixosModules.sops
  ];

  options.rave.secrets = {
    sopsFile = lib.mkOption {
      type = lib.types.path;
      default = "${secretsPkg}/secrets.yaml";
      defaultText = lib.literalMD "the sops file of `nixos/packages/rave-secrets.nix`";
      description = "The sops file holding tls-cert, tls-key, webhook-gitlab-secret, grafana-secret-key, grafana-admin-password.";
    };
    caCert = lib.mkOption {
      type = lib.types.path;
      default = "${secretsPkg.ca}/ca.pem";
      defaultText = lib.literalMD "the CA of `nixos/packages/rave-secrets.nix`";
      description = "The CA that signed tls-cert, exported in the image directory (manifest ca_cert).";
    };
    ageIdentity = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = "${secretsPkg.identity}/age-identity.txt";
      defaultText = lib.literalMD "the identity of `nixos/packages/rave-secrets.nix`";
      description = ''
        The age identity that decrypts sopsFile, put in the image directory
        (manifest age_identity) for QEMU to hand over at boot. null keeps it
        out of the image directory (a production deployment's own key).
      '';
    };
  };

  config = {
    # p1.nix and p2.nix, which import this file, override it (priorities 999, 998).
    rave.profile = lib.mkDefault "p0";

    # --- secrets (sops-nix) -------------------------------------------------
    sops = {
      defaultSopsFile = cfg.secrets.sopsFile;
      # The sops file is a build output: validating it at evaluation time would
      # be import-from-derivation. rave-secrets.nix checks it when it makes it.
      validateSopsFiles = false;
      # Read straight from QEMU fw_cfg (module loaded in the initrd, see
      # base.nix): the identity is in memory only, never on the disk.
      age.keyFile = lib.mkDefault "/sys/firmware/qemu_fw_cfg/by_name/opt/rave/age-identity/raw";
      # Not the SSH host key: on these images it does not exist when secrets
      # are set up (test access or sshd-keygen makes it later).
      age.sshKeyPaths = [ ];
      gnupg.sshKeyPaths = [ ];
      # The contract says tmpfs (sops-nix's default is ramfs); there is no swap.
      useTmpfs = true;
      secrets = lib.mapAttrs (_: owner: {
        inherit owner;
        mode = "0400";
      }) secretOwners;
    };
    # The encrypted form, where a case can read it (the store path is on the
    # disk anyway; this only names it).
    environment.etc."rave/secrets/secrets.yaml".source = cfg.secrets.sopsFile;

    # sops-nix installs the secrets in stage 2 activation, before systemd runs
    # any unit; this unit makes a failed install visible (and stops the units
    # that need the secrets) instead of letting them start without.
    systemd.services.rave-secrets = {
      description = "rave secrets: sops-nix put every secret in /run/secrets";
      wantedBy = [ "multi-user.target" ];
      before = [
        "nginx.service"
        "webhook-dispatcher.service"
        "grafana.service"
      ];
      after = [ "local-fs.target" ];
      unitConfig.DefaultDependencies = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = lib.concatStrings (
        lib.mapAttrsToList (name: _: ''
          if [ ! -s ${config.sops.secrets.${name}.path} ]; then
            echo "rave-secrets: ${name} missing from /run/secrets (age identity not handed over at boot? fw_cfg opt/rave/age-identity)" >&2
            exit 1
          fi
        '') secretOwners
      );
    };

    # --- nginx: rave.local on 3002 ------------------------------------------
    services.nginx = {
      enable = true;
      recommendedProxySettings = true;
      sslProtocols = "TLSv1.2 TLSv1.3";
      virtualHosts."rave.local" = {
        onlySSL = true;
        listen = [
          {
            addr = "0.0.0.0";
            port = 3002;
            ssl = true;
          }
          {
            addr = "[::]";
            port = 3002;
            ssl = true;
          }
        ];
        sslCertificate = config.sops.secrets.tls-cert.path;
        sslCertificateKey = config.sops.secrets.tls-key.path;
        # Server level, inherited by every location (none of them adds its own).
        extraConfig = ''
          add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;
          add_header X-Content-Type-Options "nosniff" always;
          add_header X-Frame-Options "DENY" always;
          add_header Referrer-Policy "no-referrer" always;
          client_max_body_size 2m;
        '';
        locations."/".proxyPass = "http://127.0.0.1:3000";
        locations."/grafana/" = {
          # Prefix stripped: Grafana serves / and knows its public URL (root_url).
          proxyPass = "http://127.0.0.1:3030/";
          # Grafana sends these two itself; one copy each, nginx's.
          extraConfig = ''
            proxy_hide_header X-Frame-Options;
            proxy_hide_header X-Content-Type-Options;
          '';
        };
        locations."/ccr-ui/".proxyPass = "http://127.0.0.1:3456/ui/";
        locations."= /webhook" = {
          proxyPass = "http://127.0.0.1:3001/webhook";
          # The rate limit of images/debian/files/p0/rave.local.conf, the same numbers.
          extraConfig = ''
            limit_req zone=webhook burst=20 nodelay;
            limit_req_status 429;
          '';
        };
      };
      # /webhook's request rate per client address: 5 a second, a burst of 20 at once.
      appendHttpConfig = ''
        limit_req_zone $binary_remote_addr zone=webhook:1m rate=5r/s;
      '';
    };
    systemd.services.nginx = {
      requires = [ "rave-secrets.service" ];
      after = [ "rave-secrets.service" ];
    };

    # --- PostgreSQL: Grafana's and the dispatcher's databases -----------------
    services.postgresql = {
      enable = true;
      package = pkgs.postgresql_16;
      ensureDatabases = [ "grafana" ];
      ensureUsers = [
        {
          name = "grafana";
          ensureDBOwnership = true;
        }
      ];
    };

    # --- the webhook dispatcher ---------------------------------------------
    services.rave-webhook-dispatcher = {
      enable = true;
      package = rave.webhook-dispatcher;
    };
    systemd.services.webhook-dispatcher = {
      requires = [ "rave-secrets.service" ];
      after = [ "rave-secrets.service" ];
    };

    # --- Grafana on 127.0.0.1:3030, served under /grafana/ ------------------
    services.grafana = {
      enable = true;
      settings = {
        server = {
          http_addr = "127.0.0.1";
          http_port = 3030;
          domain = "rave.local";
          root_url = "https://rave.local:3002/grafana/";
        };
        database = {
          type = "postgres";
          host = "/run/postgresql";
          name = "grafana";
          user = "grafana";
        };
        security = {
          secret_key = "$__file{${config.sops.secrets.grafana-secret-key.path}}";
          admin_password = "$__file{${config.sops.secrets.grafana-admin-password.path}}";
        };
        # Read-only dashboards without a login (the p2 cases read them so).
        "auth.anonymous" = {
          enabled = true;
          org_role = "Viewer";
        };
        analytics.reporting_enabled = false;
      };
    };
    systemd.services.grafana = {
      requires = [
        "postgresql.service"
        "rave-secrets.service"
      ];
      after = [
        "postgresql.service"
        "postgresql-setup.service"
        "rave-secrets.service"
      ];
      # Go's collector aims below the cgroup limit instead of running into it.
      environment.GOMEMLIMIT = if cfg.safeMode then "100MiB" else "200MiB";
      serviceConfig.MemoryMax = cfg.safeModeValues.grafanaMemoryMax;
    };

    # --- vibe-kanban and claude-code-router, as agent -----------------------
    systemd.services.vibe-kanban = {
      description = "vibe-kanban (127.0.0.1:3000)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      environment = {
        HOME = "/home/agent";
        HOST = "127.0.0.1";
        PORT = "3000";
        BROWSER = "none";
      };
      serviceConfig = {
        Type = "simple";
        User = "agent";
        Group = "users";
        WorkingDirectory = "/home/agent";
        ExecStart = lib.getExe rave.vibe-kanban;
        Restart = "on-failure";
        RestartSec = 2;
      };
    };

    systemd.services.claude-code-router = {
      description = "claude-code-router (127.0.0.1:3456, no upstream needed to start)";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      environment.HOME = "/home/agent";
      path = [ pkgs.nodejs_22 ];
      preStart = ''
        install -d -m 0700 /home/agent/.claude-code-router
        install -m 0600 ${ccrConfig} /home/agent/.claude-code-router/config.json
      '';
      serviceConfig = {
        Type = "simple";
        User = "agent";
        Group = "users";
        WorkingDirectory = "/home/agent";
        ExecStart = "${lib.getExe pkgs.nodejs_22} ${rave.claude-code-router}/node_modules/@musistudio/claude-code-router/dist/cli.js start";
        Restart = "on-failure";
        RestartSec = 2;
      };
    };

    # --- what manifest.json says (nixos/image.nix writes it) ----------------
    rave.manifest = {
      components = {
        sshd = "sshd.service";
        nginx = "nginx.service";
        postgresql = "postgresql.service";
        grafana = "grafana.service";
        vibe-kanban = "vibe-kanban.service";
        claude-code-router = "claude-code-router.service";
        webhook-dispatcher = "webhook-dispatcher.service";
        secrets = "rave-secrets.service";
      };
      limits = {
        webhook-dispatcher = config.services.rave-webhook-dispatcher.memoryMax;
        grafana = cfg.safeModeValues.grafanaMemoryMax;
      };
    };
  };
}
