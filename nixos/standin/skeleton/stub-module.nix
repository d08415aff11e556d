# rave stand-in (issue 17): every NixOS option the rave modules (or the real
# modules of the stand-in) set or read that no real module of the stand-in
# declares (module-list.nix lists the real ones). Each is declared here, in
# this one file, so the driver labels an option [stub] when only this file
# declares it. Types are loose
# (anything): a stub checks that an option exists, not its type. Defaults are
# what the real modules' defaults would give, as far as anything reads them.
# Not public code: the rave project's own.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  # A stub option: any value, merged as `anything` merges (lists: listOf
  # anything, so that several modules can add to them).
  stubType =
    default:
    if builtins.isList default then
      types.listOf types.anything
    else if builtins.isAttrs default then
      types.lazyAttrsOf types.anything
    else
      types.anything;
  stub =
    default:
    if lib.isOption default then
      default
    else
      mkOption {
        type = stubType default;
        inherit default;
        description = "rave stand-in stub";
      };
  lines = mkOption {
    type = types.lines;
    default = "";
    description = "rave stand-in stub";
  };
  stubRequired = mkOption {
    type = types.anything;
    description = "rave stand-in stub (no default)";
  };
  stubLazy =
    default:
    mkOption {
      type = types.lazyAttrsOf types.anything;
      inherit default;
      description = "rave stand-in stub";
    };
  # A namespace whose options are partly declared by real modules (which may
  # declare options inside it): a submodule that accepts any undeclared
  # attribute (freeform), with the defaults given as stub options.
  stubFreeform =
    defaults:
    mkOption {
      type = types.submodule {
        freeformType = types.lazyAttrsOf types.anything;
        options = lib.mapAttrs (_: stub) defaults;
      };
      default = { };
      description = "rave stand-in stub";
    };
  # A namespace: one stub option per key (nested sets that are not empty are
  # namespaces too), so each is listed and labelled on its own, and a key
  # nobody declared is an error, as with a real module.
  stubNamespace =
    defaults:
    lib.mapAttrs (
      _: v:
      if builtins.isAttrs v && v != { } && !(lib.isOption v) && !(v ? _type) && !(lib.isDerivation v) then
        stubNamespace v
      else
        stub v
    ) defaults;
in
{
  options = {
    # --- meta (nixos/modules/misc/meta.nix: every real module sets meta.*) ----
    meta = stubLazy { };

    # --- nixpkgs (nixos/modules/misc/nixpkgs.nix) -------------------------------
    nixpkgs = {
      hostPlatform = stubRequired;
      system = stub null;
      pkgs = stub null;
    };

    # --- boot: the parts no real module of the stand-in declares -----------------
    # (stage-1.nix, stage-2.nix, systemd/initrd.nix, modprobe.nix, efi.nix, …)
    boot = stubNamespace {
      blacklistedKernelModules = [ ];
      kernel.sysctl = stubLazy { };
      extraModprobeConfig = "";
      extraSystemdUnitPaths = [ ];
      isContainer = false;
      isNspawnContainer = false;
      postBootCommands = "";
      loader = {
        efi = stubNamespace {
          canTouchEfiVariables = false;
          efiSysMountPoint = "/boot";
        };
        timeout = 5;
        supportsInitrdSecrets = false;
      };
      initrd = {
        enable = true;
        checkJournalingFS = true;
        secrets = { };
        postDeviceCommands = "";
        preLVMCommands = "";
        # nixos/modules/system/boot/systemd/initrd.nix (users, groups come from
        # users-groups.nix, tmpfiles.settings from tmpfiles.nix)
        systemd = {
          enable = false;
          # { source; target; } each, as initrd.nix's submodule coerces them.
          storePaths = mkOption {
            type = types.listOf types.anything;
            default = [ ];
            apply = map (p: if builtins.isAttrs p && p ? target then p else { source = p; target = "${p}"; });
            description = "rave stand-in stub";
          };
          contents = stubLazy { };
          services = stubLazy { };
          additionalUpstreamUnits = [ ];
          managerEnvironment = stubLazy { };
          packages = [ ];
        };
      };
    };

    # --- hardware (nixos/modules/hardware/*) -----------------------------------------
    hardware = stubNamespace {
      deviceTree = {
        enable = false;
        package = null;
      };
      # As nixos/modules/hardware/all-firmware.nix: a list, read as one package.
      firmware = mkOption {
        type = types.listOf types.anything;
        default = [ ];
        apply = list: pkgs.buildEnv {
          name = "firmware";
          paths = list;
        };
        description = "rave stand-in stub";
      };
      rtl-sdr.enable = false;
      nvidia.package = null;
    };

    i18n = stubNamespace {
      imperativeLocale = false;
      defaultLocale = "en_US.UTF-8";
      supportedLocales = [ ];
    };
    time = stubNamespace { timeZone = null; };

    # --- networking: what network-interfaces.nix and the firewall do not declare --
    networking = {
      proxy = stubNamespace { envVars = { }; };
      # nixos/modules/services/hardware/udev.nix
      usePredictableInterfaceNames = stub true;
      resolvconf = stubNamespace {
        enable = true;
        package = null;
      };
    };

    # --- programs, security: not real in the stand-in --------------------------------
    programs = stubNamespace {
      ssh = {
        package = pkgs.openssh;
        knownHosts = { };
        setXAuthLocation = false;
        extraConfig = "";
        startAgent = false;
      };
    };
    security = stubNamespace {
      pam = {
        services = stubLazy { };
      };
      acme = {
        certs = stubLazy { };
      };
      googleOsLogin.enable = false;
      pki.caBundle = "/etc/ssl/certs/ca-certificates.crt";
      polkit.enable = false;
      wrappers = stubLazy { };
      apparmor.enable = false;
    };

    # --- services no real module of the stand-in declares ------------------------
    services = {
      fail2ban = stubFreeform { enable = false; };
      firewalld = stubNamespace { enable = false; };
      mysql = stubNamespace {
        enable = false;
        user = "mysql";
      };
      postfix = stubNamespace {
        enable = false;
        setgidGroup = "postdrop";
      };
      userborn = stubNamespace { enable = false; };
      udev = stubNamespace {
        packages = [ ];
        extraRules = "";
        path = [ ];
      };
      logrotate = stubNamespace {
        enable = false;
        settings = stubLazy { };
      };
      journald = stubNamespace { };
      dbus = stubNamespace {
        enable = true;
        packages = [ ];
      };
      mstpd = stubNamespace { enable = false; };
      # What the prometheus exporters (all imported by exporters.nix) read.
      apache-kafka = stubNamespace { enable = false; };
      dovecot2 = stubFreeform { };
      mailman = stubFreeform { };
      moonraker = stubFreeform { enable = false; };
      pgbouncer = stubFreeform { };
      rspamd = stubFreeform { };
      unbound = stubFreeform { enable = false; };
      # exporters/unpoller.nix reuses these option declarations.
      unpoller = stubNamespace {
        enable = false;
        unifi.controllers = [ ];
        loki = {
          url = "";
          user = "";
          pass = "";
          verify_ssl = false;
          timeout = "10s";
          interval = "2m";
        };
      };
      varnish = stubFreeform { };
    };

    swapDevices = stub [ ];

    # The options system/boot/stage-1.nix adds to each file system
    # (tasks/filesystems.nix declares fileSystems).
    fileSystems = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.neededForBoot = mkOption {
            type = types.bool;
            default = false;
            description = "rave stand-in stub";
          };
        }
      );
    };

    # nixos/modules/programs/shadow.nix (users-groups.nix is real)
    users.defaultUserShell = stub pkgs.bashInteractive;

    # systemd: what systemd.nix and tmpfiles.nix do not declare
    # (systemd/user.nix, system/boot/networkd.nix, systemd/sysusers.nix, …)
    systemd = {
      additionalUpstreamUserUnits = stub [ ];
      user = stubFreeform {
        units = { };
        services = { };
        timers = { };
        sockets = { };
        targets = { };
        paths = { };
        slices = { };
        tmpfiles = { };
        generators = { };
      };
      network = stubFreeform {
        enable = false;
        links = { };
        networks = { };
        netdevs = { };
        wait-online = { };
      };
      sysusers = stubNamespace { enable = false; };
    };

    # nixos/modules/config/nix.nix, services/system/nix-daemon.nix (nix-channel.nix is real)
    nix = {
      enable = stub true;
      package = stub null;
      settings = stubLazy { };
    };

    # nixos/modules/misc/lib.nix
    lib = stubLazy { };

    # nixos/modules/misc/documentation.nix is transcribed but not listed: it
    # imports man-db.nix, mandoc.nix and meta.nix, which the stand-in lacks.
    documentation = stubNamespace {
      enable = true;
      nixos.enable = true;
      man.enable = true;
      doc.enable = true;
      info.enable = true;
      dev.enable = false;
    };

    virtualisation = stubNamespace {
      vswitch = {
        enable = false;
        package = null;
      };
    };

    # --- system: what build.nix, etc.nix, version.nix do not declare ------------------
    system = stubNamespace {
      activationScripts = stubLazy { };
      userActivationScripts = stubLazy { };
      extraDependencies = [ ];
      checks = [ ];
      systemBuilderCommands = "";
      preSwitchChecks = stubLazy { };
      # nixos/modules/system/boot/nixos-init.nix
      nixos-init = {
        enable = false;
        package = pkgs.nixos-init;
      };
      extraSystemBuilderCmds = "";
      # As nixos/modules/config/nsswitch.nix: a list, read as { list; path; }.
      nssModules = mkOption {
        type = types.listOf types.anything;
        default = [ ];
        apply = list: {
          inherit list;
          path = lib.makeSearchPathOutput "lib" "lib" list;
        };
        description = "rave stand-in stub";
      };
      boot.loader = {
        id = "";
        kernelFile = "bzImage";
        initrdFile = "initrd";
      };
      # nixos/modules/system/activation/top-level.nix
      systemBuilderArgs = stubLazy { };
      # nixos/modules/config/nsswitch.nix
      nssDatabases = {
        passwd = [ ];
        group = [ ];
        shadow = [ ];
        sudoers = [ ];
        hosts = [ ];
        services = [ ];
      };
    };

    environment = stubNamespace {
      variables = stubLazy { };
      sessionVariables = stubLazy { };
      profileRelativeSessionVariables = stubLazy { };
      shellAliases = stubLazy { };
      shellInit = lines;
      loginShellInit = lines;
      interactiveShellInit = lines;
      extraInit = lines;
      profiles = [ ];
      shells = [ ];
    };
  };

  config = {
    # What nixos/modules/config/networking.nix puts in /etc (nftables.nix
    # reads them).
    environment.etc = {
      hosts.text = "127.0.0.1 localhost\n::1 localhost\n";
      protocols.source = "${pkgs.iana-etc}/etc/protocols";
      services.source = "${pkgs.iana-etc}/etc/services";
    };
    # nixos/modules/system/boot/stage-1.nix: the initrd, as text of what it
    # would hold.
    system.build.initialRamdisk = pkgs.writeText "initrd-rave-standin" (
      builtins.toJSON {
        modules = config.boot.initrd.kernelModules ++ config.boot.initrd.availableKernelModules;
      }
    );
    # A stand-in for the system derivation (the real one is
    # nixos/modules/system/activation/top-level.nix): what it builds from, as
    # text, so forcing its .drvPath forces the units, files and packages.
    system.build.toplevel = pkgs.writeText "nixos-system-rave-standin" (
      builtins.toJSON {
        units = lib.mapAttrs (_: u: u.text or null) config.systemd.units;
        etc = config.system.build.etc or null;
        tmpfiles = config.systemd.tmpfiles.rules;
        path = config.system.path;
      }
    );
  };
}
