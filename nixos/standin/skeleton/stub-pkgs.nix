# rave stand-in (issue 17): a stub `pkgs` for evaluating NixOS configurations
# without nixpkgs' package set. Every package is a derivation that can be
# instantiated (it has a .drvPath) but never built (builder /bin/false). The
# builders (runCommand, writeText, stdenv.mkDerivation, buildRustPackage, …)
# take the arguments nixpkgs' take and put the strings among them into the
# derivation, so forcing a .drvPath forces the text (scripts, configuration
# files) a module generated. Not public code: the rave project's own.
{
  lib,
  path,
  system ? "x86_64-linux",
}:
let
  inherit (lib) types;
  platform = lib.systems.elaborate system;

  # A value a derivation attribute can hold: strings, numbers, bools, paths,
  # derivations and lists of those; anything else (functions, plain attribute
  # sets) stays out of the derivation and only in passthru.
  drvable =
    v:
    builtins.isString v
    || builtins.isInt v
    || builtins.isBool v
    || builtins.isFloat v
    || builtins.isPath v
    || v == null
    || (builtins.isAttrs v && v ? outPath)
    || (builtins.isList v && lib.all drvable v);

  excluded = [
    "passthru"
    "meta"
    "name"
    "pname"
    "version"
    "system"
    "builder"
    "args"
    "__structuredAttrs"
    "derivationArgs"
  ];

  # mkDrv { name; attrs ? {}; passthru ? {}; meta ? {}; outputs ? }: the one
  # derivation constructor.
  mkDrv =
    {
      name,
      attrs ? { },
      passthru ? { },
      meta ? { },
    }:
    let
      # The derivation's attributes: every attribute but the excluded, each
      # value kept if a derivation can hold it (else null). The set of names
      # never depends on the values, so a package whose text refers back to
      # the package (etc.nix's passthru.targets) does not recurse.
      env = lib.mapAttrs (_: v: if drvable v then v else null) (builtins.removeAttrs attrs excluded);
      drv = derivation (
        env
        // {
          inherit name system;
          builder = "/bin/false";
          args = [ "rave-stand-in: evaluation only, never built" ];
        }
      );
      pname = attrs.pname or (lib.getName name);
      version = attrs.version or (lib.getVersion name);
      # Every output carries passthru and meta, as stdenv's do.
      outputsOf = lib.genAttrs (attrs.outputs or [ "out" ]) (o: drv.${o} // extra);
      # passthru last: a package may bring its own override (the kernel's).
      extra = {
        meta = {
          mainProgram = lib.getName name;
          name = name;
        }
        // meta;
        inherit pname version passthru;
        overrideAttrs = f: mkDrv {
          inherit name meta passthru;
          attrs = attrs // (if builtins.isFunction (f attrs) then (f attrs) attrs else f attrs);
        };
        override = _: self;
        overrideDerivation = _: self;
      }
      // passthru;
      self = drv // outputsOf // extra;
    in
    self;

  # A package by name, with the attributes modules ask of one.
  pkg =
    name: extra:
    mkDrv {
      inherit name;
      passthru = extra;
      meta = {
        mainProgram = lib.getName name;
      };
    };

  nameOf = args: args.name or "${args.pname}-${args.version or "0"}";

  mkDerivation =
    argsOrFun:
    let
      args = if builtins.isFunction argsOrFun then lib.fix argsOrFun else argsOrFun;
    in
    mkDrv {
      name = nameOf args;
      attrs = args;
      passthru = args.passthru or { };
      meta = args.meta or { };
    };

  writeTextFile =
    {
      name,
      text,
      executable ? false,
      destination ? "",
      checkPhase ? "",
      meta ? { },
      allowSubstitutes ? false,
      preferLocalBuild ? true,
      derivationArgs ? { },
    }:
    mkDrv {
      inherit name meta;
      attrs = {
        inherit
          text
          executable
          destination
          checkPhase
          ;
      }
      // derivationArgs;
    };

  writeText = name: text: writeTextFile { inherit name text; };

  writeShellScript =
    name: text:
    writeTextFile {
      inherit name;
      executable = true;
      text = "#!/bin/sh\n" + text;
    };

  writeShellScriptBin =
    name: text:
    writeTextFile {
      inherit name;
      executable = true;
      destination = "/bin/${name}";
      text = "#!/bin/sh\n" + text;
      meta.mainProgram = name;
    };

  writeShellApplication =
    {
      name,
      text,
      runtimeInputs ? [ ],
      runtimeEnv ? null,
      meta ? { },
      passthru ? { },
      checkPhase ? null,
      excludeShellChecks ? [ ],
      extraShellCheckFlags ? [ ],
      bashOptions ? [
        "errexit"
        "nounset"
        "pipefail"
      ],
      derivationArgs ? { },
      inheritPath ? true,
    }:
    mkDrv {
      inherit name passthru;
      meta = {
        mainProgram = name;
      }
      // meta;
      attrs = {
        inherit text runtimeInputs;
        destination = "/bin/${name}";
      };
    };

  runCommandWith =
    name: env: buildCommand:
    mkDrv {
      inherit name;
      attrs = env // {
        inherit buildCommand;
      };
      passthru = env.passthru or { };
      meta = env.meta or { };
    };

  # pkgs.formats, the subset the modules use: the types are nixpkgs' shapes.
  jsonValue =
    let
      valueType =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
            types.path
            (types.attrsOf valueType)
            (types.listOf valueType)
          ]
        )
        // {
          description = "JSON value";
        };
    in
    valueType;
  dataFormat = ext: toText: {
    type = jsonValue;
    generate = name: value: writeText name (toText value);
    lib = { };
  };
  iniAtom = types.nullOr (
    types.oneOf [
      types.bool
      types.int
      types.float
      types.str
    ]
  );
  formats = {
    json = _: dataFormat "json" builtins.toJSON;
    yaml = _: dataFormat "yaml" builtins.toJSON;
    yaml_1_1 = _: dataFormat "yaml" builtins.toJSON;
    yaml_1_2 = _: dataFormat "yaml" builtins.toJSON;
    toml = _: dataFormat "toml" builtins.toJSON;
    # ini and keyValue as nixpkgs' pkgs/pkgs-lib/formats.nix makes them: the
    # same types (atoms coerced to lists when lists are allowed) and the same
    # transformation of lists (listToValue) before lib.generators renders them.
    ini =
      {
        listsAsDuplicateKeys ? false,
        listToValue ? null,
        ...
      }@args:
      assert listsAsDuplicateKeys -> listToValue == null;
      let
        atom = iniAtomFor listsAsDuplicateKeys listToValue "INI";
      in
      {
        type = types.attrsOf (types.attrsOf atom);
        generate =
          name: value:
          writeText name (
            lib.generators.toINI (builtins.removeAttrs args [ "listToValue" ]) (
              if listToValue != null then lib.mapAttrs (_: lib.mapAttrs (_: listValue listToValue)) value else value
            )
          );
        lib.types.atom = atom;
      };
    keyValue =
      {
        listsAsDuplicateKeys ? false,
        listToValue ? null,
        ...
      }@args:
      assert listsAsDuplicateKeys -> listToValue == null;
      let
        atom = iniAtomFor listsAsDuplicateKeys listToValue "atom";
      in
      {
        type = types.attrsOf atom;
        generate =
          name: value:
          writeText name (
            lib.generators.toKeyValue (builtins.removeAttrs args [ "listToValue" ]) (
              if listToValue != null then lib.mapAttrs (_: listValue listToValue) value else value
            )
          );
        lib.types.atom = atom;
      };
  };
  listValue = listToValue: v: if builtins.isList v then listToValue v else v;
  iniAtomFor =
    listsAsDuplicateKeys: listToValue: what:
    let
      single = iniAtom // {
        description = "${what} atom (null, bool, int, float or string)";
      };
    in
    if listsAsDuplicateKeys then
      types.coercedTo single lib.singleton (types.listOf single)
    else if listToValue != null then
      types.coercedTo single lib.singleton (types.nonEmptyListOf single)
    else
      single;

  rustc = pkg "rustc-1.95.0" { };

  mkPostgresql =
    version: extensions:
    let
      self = mkDrv {
        name = "postgresql-${version}";
        attrs = {
          inherit version;
          pname = "postgresql";
          exts = extensions;
        };
        passthru = {
          psqlSchema = lib.versions.major version;
          withJIT = self;
          withoutJIT = self;
          jitSupport = false;
          withPackages = f: mkPostgresql version (extensions ++ f pkgs.postgresql.pkgs);
          pkgs = { };
          installedExtensions = extensions;
        };
      };
    in
    self;

  mkNginx =
    pname: version: modules:
    let
      self = mkDrv {
        name = "${pname}-${version}";
        attrs = {
          inherit pname version;
          modules = map (m: m.src) modules;
        };
        passthru = {
          inherit modules;
          override = args: mkNginx pname version (args.modules or modules);
        };
      };
    in
    self;

  mkKernel =
    args:
    mkDrv {
      name = "linux-6.12.30";
      attrs = {
        outputs = [
          "out"
          "dev"
          "modules"
        ];
      }
      // lib.filterAttrs (_: drvable) args;
      passthru = {
        modDirVersion = "6.12.30";
        features = {
          ia32Emulation = true;
          efiBootStub = true;
        }
        // (args.features or { });
        # As a kernel's `config` attribute (pkgs/os-specific/linux/kernel/generic.nix).
        config = {
          isSet = _: true;
          getValue = _: "y";
          isYes = _: true;
          isNo = _: false;
          isModule = _: false;
          isEnabled = _: true;
          isDisabled = _: false;
        };
        kernelPatches = args.kernelPatches or [ ];
        override = f: mkKernel (args // (if builtins.isFunction f then f args else f));
        isHardened = false;
        isZen = false;
        isLibre = false;
      };
    };

  core = {
    inherit
      lib
      path
      system
      formats
      writeTextFile
      writeText
      writeShellScript
      writeShellScriptBin
      writeShellApplication
      runCommandWith
      ;
    pkgs = pkgs;
    hostPlatform = platform;
    buildPlatform = platform;
    targetPlatform = platform;
    stdenv = {
      inherit mkDerivation;
      hostPlatform = platform;
      buildPlatform = platform;
      targetPlatform = platform;
      isLinux = true;
      isx86_64 = true;
      cc = pkg "gcc-14" {
        cc = pkg "gcc-unwrapped-14" { lib = pkg "gcc-14-lib" { }; };
        libc = pkgs.glibc;
        bintools = pkg "binutils-2.44" { };
      };
      shell = "/bin/sh";
    };
    stdenvNoCC = pkgs.stdenv;
    buildPackages = pkgs;
    pkgsBuildHost = pkgs;
    pkgsBuildBuild = pkgs;
    pkgsHostTarget = pkgs;
    callPackage =
      fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
        fargs = builtins.functionArgs f;
        auto = builtins.intersectAttrs fargs pkgs;
        missing = lib.filter (n: !fargs.${n} && !(auto ? ${n}) && !(args ? ${n})) (builtins.attrNames fargs);
      in
      if missing != [ ] then
        throw "stub pkgs.callPackage: no stub for ${lib.concatStringsSep ", " missing}"
      else
        f (auto // args);
    runCommand = name: env: runCommandWith name env;
    runCommandLocal = name: env: runCommandWith name env;
    runCommandCC = name: env: runCommandWith name env;
    writeScript = name: text: writeTextFile {
      inherit name text;
      executable = true;
    };
    writeScriptBin = name: text: writeTextFile {
      inherit name text;
      executable = true;
      destination = "/bin/${name}";
    };
    writeTextDir = p: text: writeTextFile {
      name = builtins.baseNameOf p;
      inherit text;
      destination = "/${p}";
    };
    writeClosure = paths: writeText "closure" (toString paths);
    writeReferencesToFile = p: writeText "references" (toString p);
    symlinkJoin =
      {
        name,
        paths,
        ...
      }@args:
      mkDrv {
        inherit name;
        attrs = args;
        passthru = args.passthru or { };
      };
    buildEnv =
      {
        name,
        paths,
        ...
      }@args:
      mkDrv {
        inherit name;
        attrs = builtins.removeAttrs args [ "extraOutputsToInstall" ];
        passthru = args.passthru or { };
      };
    linkFarm =
      name: entries:
      mkDrv {
        inherit name;
        attrs.entries = map (e: "${e.name}=${e.path}") (
          if builtins.isList entries then entries else lib.mapAttrsToList (name: path: { inherit name path; }) entries
        );
      };
    mkShell = args: mkDrv {
      name = args.name or "nix-shell";
      attrs = builtins.removeAttrs args [ "packages" ] // {
        packages = args.packages or [ ];
      };
    };
    fetchurl =
      {
        url ? null,
        urls ? [ ],
        hash ? "",
        sha256 ? "",
        name ? baseNameOf (if url != null then url else builtins.head urls),
        ...
      }:
      mkDrv {
        inherit name;
        attrs = {
          urls = if url != null then [ url ] else urls;
          outputHash = if hash != "" then hash else sha256;
        };
      };
    rustPlatform = {
      rust = {
        inherit rustc;
        cargo = pkg "cargo-1.95.0" { };
      };
      buildRustPackage =
        args:
        assert lib.assertMsg (args ? cargoLock || args ? cargoHash || args ? cargoSha256)
          "stub buildRustPackage: neither cargoLock nor cargoHash";
        assert lib.assertMsg (
          !(args ? cargoLock) || builtins.pathExists args.cargoLock.lockFile
        ) "stub buildRustPackage: cargoLock.lockFile does not exist";
        mkDerivation (builtins.removeAttrs args [ "cargoLock" ]);
    };
    inherit rustc;
    buildGoModule = args: mkDerivation (builtins.removeAttrs args [ "vendorHash" ]);
    importNpmLock = {
      buildNodeModules =
        {
          npmRoot,
          nodejs,
          derivationArgs ? { },
        }:
        assert lib.assertMsg (builtins.pathExists (npmRoot + "/package-lock.json"))
          "stub importNpmLock.buildNodeModules: no package-lock.json in npmRoot";
        mkDrv {
          name = "node-modules";
          attrs = {
            inherit npmRoot nodejs;
          };
        };
    };
    # nixos/lib/make-disk-image.nix and friends are not part of the stub;
    # harness-image.nix imports it from pkgs.path (the stand-in holds it).
    closureInfo = { rootPaths }: mkDrv {
      name = "closure-info";
      attrs = {
        inherit rootPaths;
      };
    };
    vmTools = {
      runInLinuxVM = drv: drv;
      override = _: pkgs.vmTools;
    };
    python3 = pkg "python3-3.12" { withPackages = _: pkg "python3-env" { }; pkgs = { }; };
    perl = pkg "perl-5.40" { withPackages = _: pkg "perl-env" { }; };
    # PostgreSQL as nixos/modules/services/databases/postgresql.nix uses it:
    # withJIT/withoutJIT, withPackages, psqlSchema, version, installedExtensions.
    postgresql = pkgs.postgresql_17;
    postgresql_14 = mkPostgresql "14.18" [ ];
    postgresql_15 = mkPostgresql "15.13" [ ];
    postgresql_16 = mkPostgresql "16.9" [ ];
    postgresql_17 = mkPostgresql "17.5" [ ];
    postgresql_18 = mkPostgresql "18.0" [ ];
    systemd = pkg "systemd-257.6" {
      withCryptsetup = true;
      withTimesyncd = true;
      withHostnamed = true;
      withLocaled = true;
      withTimedated = true;
      withNetworkd = true;
      withResolved = true;
      withLogind = true;
      withMachined = true;
      withImportd = true;
      withPortabled = false;
      withSysupdate = false;
      withHomed = false;
      withCoredump = true;
      withEfi = true;
      withBootloader = true;
      withUkify = false;
      withKmod = true;
      withSysusers = true;
      withRepart = true;
      withOomd = true;
      withPCRE2 = true;
      withTpm2Tss = false;
      withFido2 = false;
      withPolkit = true;
      withLibBPF = true;
      withVmspawn = false;
      withUtmp = true;
      withNspawn = true;
      withTpm2Units = false;
      withKerberos = false;
      interfaceVersion = 2;
      util = pkg "systemd-util-257.6" { };
      util-linux = pkgs.util-linux;
      kmod = pkgs.kmod;
    };
    # The kernel: what nixos/modules/system/boot/kernel.nix asks of
    # linuxPackages (extend, kernel.override, features, config) and
    # nixos/modules/tasks/filesystems.nix and friends of the kernel.
    linuxPackages = lib.makeExtensible (_: {
      kernel = mkKernel { };
    });
    linuxPackages_latest = pkgs.linuxPackages;
    linuxKernel.packages.linux_6_12 = pkgs.linuxPackages;
    nginx = mkNginx "nginx" "1.28.0" [ ];
    nginxStable = pkgs.nginx;
    nginxMainline = mkNginx "nginx" "1.29.0" [ ];
    openresty = mkNginx "openresty" "1.27.1.2" [ ];
    nginxModules = lib.genAttrs [
      "zstd"
      "brotli"
      "lua"
      "echo"
      "njs"
      "vts"
    ] (n: {
      name = n;
      src = pkg "nginx-module-${n}-0" { };
      inputs = [ ];
      disableIPv6 = false;
    });
    writers = {
      writeNginxConfig = name: text: writeText name text;
      writePython3 = name: _args: text: writeTextFile {
        inherit name text;
        executable = true;
      };
      writePython3Bin = name: _args: text: writeTextFile {
        inherit name text;
        executable = true;
        destination = "/bin/${name}";
      };
    };
    writeNginxConfig = name: text: writeText name text;
    grafana = pkg "grafana-12.0.0" { };
    grafanaPlugins = { };
    prometheus = pkg "prometheus-3.4.1" { cli = pkg "promtool-3.4.1" { }; };
    prometheus-node-exporter = pkg "node_exporter-1.9.1" { };
    prometheus-pushgateway = pkg "pushgateway-1.11.1" { };
    openssh = pkg "openssh-10.0p2" { withKerberos = false; };
    sudo = pkg "sudo-1.9.16" { };
    # nixos-artwork, memtest, breeze: named by grub.nix (defaults only).
    nixos-artwork.wallpapers.simple-dark-gray-bootloader = pkg "simple-dark-gray-bootloader-0" {
      gnomeFilePath = "/share/backgrounds/nixos/nix-wallpaper-simple-dark-gray_bootloader.png";
    };
    memtest86plus = pkg "memtest86plus-7.20" { efi = pkg "memtest86plus-efi-7.20" { }; };
    kdePackages.breeze-grub = pkg "breeze-grub-6" { };
    python3Packages = {
      pglast = pkg "pglast-7" { };
      py-air-control-exporter = pkg "py-air-control-exporter-0" { };
    };
    luajit_openresty = pkg "luajit-openresty-2.1" {
      withPackages = _: pkg "luajit-env" { };
      pkgs = { };
      luaversion = "5.1";
    };
    # The hash schemes users-groups.nix accepts in hashedPassword.
    libxcrypt = pkg "libxcrypt-4.4.38" {
      enabledCryptSchemeIds = [
        "y"
        "gy"
        "7"
        "2b"
        "2y"
        "2a"
        "6"
      ];
    };
    knot-dns = pkg "knot-dns-3.4" { };
    kernelPatches = { };
    aggregateModules = modules: mkDrv {
      name = "kernel-modules";
      attrs.modules = modules;
    };
    pkgsi686Linux = pkgs;
    runtimeShell = "${pkgs.bash}/bin/bash";
    xorg = {
      lndir = pkgs.lndir;
      xauth = pkgs.xauth;
    };
    lklWithFirewall = mkDrv {
      name = "lkl-0";
      attrs.outputs = [
        "out"
        "lib"
        "dev"
      ];
    };
    libredirect = pkg "libredirect-0" { };
    # As nixpkgs' replaceVars: the file with @name@ replaced; here a
    # derivation made of the file and the values.
    replaceVars =
      src: vars:
      mkDrv {
        name = baseNameOf (toString src);
        attrs = {
          inherit src;
        }
        // lib.mapAttrs' (n: v: lib.nameValuePair "var_${n}" (if v == null then "" else v)) (lib.filterAttrs (_: drvable) vars);
      };
    nodejs_22 = pkg "nodejs-22.17.0" { meta.mainProgram = "node"; };
  };

  # Packages that need no attributes beyond a derivation's.
  plain = lib.genAttrs [
    "bash"
    "bashInteractive"
    "coreutils"
    "curl"
    "openssl"
    "iproute2"
    "nftables"
    "iptables"
    "util-linux"
    "procps"
    "gawk"
    "gnugrep"
    "gnused"
    "gnutar"
    "gzip"
    "findutils"
    "kmod"
    "age"
    "sops"
    "gnupg"
    "qemu_kvm"
    "qemu"
    "unzip"
    "autoPatchelfHook"
    "makeWrapper"
    "pkg-config"
    "zlib"
    "libssh2"
    "shellcheck"
    "jq"
    "libxml2"
    "mmdebstrap"
    "e2fsprogs"
    "clippy"
    "rustfmt"
    "nix"
    "go"
    "su"
    "shadow"
    "glibc"
    "glibcLocales"
    "tzdata"
    "iana-etc"
    "cacert"
    "xz"
    "zstd"
    "which"
    "less"
    "ncurses"
    "getent"
    "dbus"
    "logrotate"
    "openresolv"
    "iputils"
    "nettools"
    "ethtool"
    "inetutils"
    "libcap"
    "fakeroot"
    "lkl"
    "cpio"
    "busybox"
  ] (n: pkg "${n}-0" { });

  # The packages the real NixOS modules of the stand-in name (pkgs.X, and the
  # defaults of mkPackageOption, system-path.nix's requiredPackages),
  # generated from those files; no attributes beyond a derivation's.
  forModules = lib.genAttrs [
    "composefs"
    "erofs-utils"
    "fish"
    "xonsh"
    "zsh"
    "nixos-init"
    "attr"
    "bzip2"
    "coreutils-full"
    "diffutils"
    "getconf"
    "gnupatch"
    "netcat"
    "mkpasswd"
    "time"
    "rsync"
    "strace"
    "hostname-debian"
    "acl"
    "btrfs-progs"
    "buildkite-agent-metrics"
    "dmarc-metrics-exporter"
    "dosfstools"
    "dovecot_exporter"
    "envsubst"
    "exportarr"
    "firefox"
    "fritz-exporter"
    "gnupgMinimal"
    "go-ecoflow-exporter"
    "grub2"
    "hello"
    "host"
    "hostname"
    "ipset"
    "iptables-legacy"
    "iw"
    "kminion"
    "lndir"
    "logger"
    "lvm2"
    "mail-tlsa-check-exporter"
    "mailcap"
    "mqtt-exporter"
    "mstpd"
    "nixos-firewall-tool"
    "prometheus-apcupsd-exporter"
    "prometheus-artifactory-exporter"
    "prometheus-bind-exporter"
    "prometheus-bird-exporter"
    "prometheus-bitcoin-exporter"
    "prometheus-blackbox-exporter"
    "prometheus-borgmatic-exporter"
    "prometheus-chrony-exporter"
    "prometheus-collectd-exporter"
    "prometheus-deluge-exporter"
    "prometheus-dnsmasq-exporter"
    "prometheus-dnssec-exporter"
    "prometheus-domain-exporter"
    "prometheus-ebpf-exporter"
    "prometheus-elasticsearch-exporter"
    "prometheus-fail2ban-exporter"
    "prometheus-fastly-exporter"
    "prometheus-flow-exporter"
    "prometheus-fritzbox-exporter"
    "prometheus-frr-exporter"
    "prometheus-graphite-exporter"
    "prometheus-idrac-exporter"
    "prometheus-imap-mailstat-exporter"
    "prometheus-influxdb-exporter"
    "prometheus-ipmi-exporter"
    "prometheus-jitsi-exporter"
    "prometheus-json-exporter"
    "prometheus-junos-czerwonk-exporter"
    "prometheus-kea-exporter"
    "prometheus-keylight-exporter"
    "prometheus-klipper-exporter"
    "prometheus-knot-exporter"
    "prometheus-libvirt-exporter"
    "prometheus-lnd-exporter"
    "prometheus-mail-exporter"
    "prometheus-mailman3-exporter"
    "prometheus-mikrotik-exporter"
    "prometheus-modemmanager-exporter"
    "prometheus-mongodb-exporter"
    "prometheus-mysqld-exporter"
    "prometheus-nats-exporter"
    "prometheus-nextcloud-exporter"
    "prometheus-nginx-exporter"
    "prometheus-nginxlog-exporter"
    "prometheus-node-cert-exporter"
    "prometheus-node-exporter"
    "prometheus-nut-exporter"
    "prometheus-nvidia-gpu-exporter"
    "prometheus-opnsense-exporter"
    "prometheus-pgbouncer-exporter"
    "prometheus-php-fpm-exporter"
    "prometheus-pihole-exporter"
    "prometheus-ping-exporter"
    "prometheus-postfix-exporter"
    "prometheus-postgres-exporter"
    "prometheus-process-exporter"
    "prometheus-pushgateway"
    "prometheus-pve-exporter"
    "prometheus-rasdaemon-exporter"
    "prometheus-redis-exporter"
    "prometheus-restic-exporter"
    "prometheus-rtl_433-exporter"
    "prometheus-sabnzbd-exporter"
    "prometheus-script-exporter"
    "prometheus-shelly-exporter"
    "prometheus-siebenmann-zfs-exporter"
    "prometheus-smartctl-exporter"
    "prometheus-smokeping-prober"
    "prometheus-snmp-exporter"
    "prometheus-speedtest-exporter"
    "prometheus-sql-exporter"
    "prometheus-statsd-exporter"
    "prometheus-storagebox-exporter"
    "prometheus-surfboard-exporter"
    "prometheus-systemd-exporter"
    "prometheus-tailscale-exporter"
    "prometheus-tibber-exporter"
    "prometheus-unbound-exporter"
    "prometheus-v2ray-exporter"
    "prometheus-varnish-exporter"
    "prometheus-wireguard-exporter"
    "prometheus-xray-exporter"
    "prometheus-zfs-exporter"
    "rtl_433"
    "systemd-cryptsetup-generator"
    "thunderbird"
    "unpoller"
    "wireguard-tools"
    "xauth"
    "zfs"
  ] (n: pkg "${n}-0" { });
  pkgs = forModules // plain // core;
in
pkgs
