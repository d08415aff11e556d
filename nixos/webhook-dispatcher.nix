# The project's own webhook dispatcher (images/webhook-dispatcher) as a NixOS
# service, with the behaviour of images/webhook-dispatcher/webhook-dispatcher.service:
# user webhook, 127.0.0.1:3001, the GitLab token from /run/secrets, events in
# the local PostgreSQL (peer authentication as role webhook), MemoryMax 128M.
# Everything goes into the unit's serviceConfig at normal priority, so other
# modules can still add to it (or override one key with mkForce).
{
  config,
  lib,
  ...
}:
let
  cfg = config.services.rave-webhook-dispatcher;
in
{
  options.services.rave-webhook-dispatcher = {
    enable = lib.mkEnableOption "the rave webhook dispatcher";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The dispatcher, e.g. the flake's packages.x86_64-linux.webhook-dispatcher.";
    };

    listen = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1:3001";
      description = "Address to listen on (WEBHOOK_LISTEN).";
    };

    secretFile = lib.mkOption {
      type = lib.types.str;
      default = "/run/secrets/webhook-gitlab-secret";
      description = "File holding the X-Gitlab-Token secret (WEBHOOK_SECRET_FILE); never a store path.";
    };

    database = lib.mkOption {
      type = lib.types.str;
      default = "host=/run/postgresql user=webhook dbname=webhook";
      description = "PostgreSQL connection string (WEBHOOK_DATABASE).";
    };

    createDatabase = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Whether to create role and database webhook in the local PostgreSQL.";
    };

    memoryMax = lib.mkOption {
      type = lib.types.str;
      default = "128M";
      description = "The unit's MemoryMax.";
    };
  };

  config = lib.mkIf cfg.enable {
    users.users.webhook = {
      isSystemUser = true;
      group = "webhook";
      description = "rave webhook dispatcher";
    };
    users.groups.webhook = { };

    services.postgresql = lib.mkIf cfg.createDatabase {
      enable = true;
      ensureDatabases = [ "webhook" ];
      ensureUsers = [
        {
          name = "webhook";
          ensureDBOwnership = true;
        }
      ];
    };

    systemd.services.webhook-dispatcher = {
      description = "rave webhook dispatcher (GitLab-style webhooks on ${cfg.listen})";
      wantedBy = [ "multi-user.target" ];
      # Role and database exist once postgresql.service is up on 25.05 (its
      # postStart); later nixpkgs moved that to postgresql-setup.service.
      # After= on a unit that does not exist is harmless.
      requires = lib.optional cfg.createDatabase "postgresql.service";
      after = [
        "network.target"
        "postgresql.service"
        "postgresql-setup.service"
      ];
      environment = {
        WEBHOOK_LISTEN = cfg.listen;
        WEBHOOK_SECRET_FILE = cfg.secretFile;
        WEBHOOK_DATABASE = cfg.database;
      };
      serviceConfig = {
        Type = "simple";
        User = "webhook";
        Group = "webhook";
        ExecStart = lib.getExe' cfg.package "webhook-dispatcher";
        # SIGTERM: stop accepting, finish the requests in flight, exit 0.
        KillSignal = "SIGTERM";
        TimeoutStopSec = 30;
        Restart = "on-failure";
        RestartSec = 2;
        MemoryMax = cfg.memoryMax;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectControlGroups = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
      };
    };
  };
}
