# A harness image of any NixOS configuration: the directory rave-harness
# boots (harness/src/image.rs, manifest schema 2), at
# config.system.build.harnessImage. Nothing here is particular to rave: the
# label, the components and the rest are options.
#
#   imports = [ rave.nixosModules.harnessImage rave.nixosModules.testAccess ];
#   harness.image = {
#     profile = "my-web";
#     components.web.unit = "nginx.service";
#   };
#
# The disk is nixpkgs' nixos/lib/make-disk-image.nix: a bare ext4 filesystem
# (partitionTableType "none", label "nixos") holding the system closure, no
# boot loader (QEMU boots the kernel directly with the manifest's command
# line), no channel. make-disk-image runs part of its work in a VM
# (vmTools.runInLinuxVM), so the builder needs the kvm system feature.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.harness.image;
  toplevel = config.system.build.toplevel;
  inherit (lib) mkOption types;

  disk = import "${pkgs.path}/nixos/lib/make-disk-image.nix" {
    inherit config lib pkgs;
    name = "${cfg.name}-disk";
    format = "qcow2";
    partitionTableType = "none";
    label = "nixos";
    installBootLoader = false;
    copyChannel = false;
    diskSize = "auto";
    inherit (cfg) additionalSpace;
  };

  kernelCmdline = lib.concatStringsSep " " ([ "init=${toplevel}/init" ] ++ config.boot.kernelParams);

  # No built_at: the disk is made in a VM whose clock says nothing of when the
  # image's own files were, so a search for what a guest wrote reads every file.
  manifest = {
    schema = 2;
    inherit (cfg) profile flavor;
    kernel = "bzImage";
    initrd = "initrd";
    disk = "nixos.qcow2";
    kernel_cmdline = kernelCmdline;
    ssh_user = cfg.sshUser;
    ca_cert = if cfg.caCert == null then null else "ca.pem";
    inherit (cfg) https;
    fw_cfg = lib.mapAttrs (name: _: "fw-cfg/${lib.replaceStrings [ "/" ] [ "-" ] name}") cfg.fwCfg;
    components = lib.mapAttrs (_: c: { inherit (c) unit; }) cfg.components;
    inherit (cfg) absent properties;
  };
in
{
  options.harness.image = {
    profile = mkOption {
      type = types.strMatching ".+";
      description = "The image's label: trials of one label share a guest.";
      example = "my-web";
    };
    name = mkOption {
      type = types.str;
      default = "harness-${cfg.profile}";
      defaultText = lib.literalExpression ''"harness-''${config.harness.image.profile}"'';
      description = "The image derivation's name.";
    };
    flavor = mkOption {
      type = types.str;
      default = "nixos";
      description = "How the image was built, for messages.";
    };
    sshUser = mkOption {
      type = types.str;
      default = "agent";
      description = "The user the harness logs in as (test access installs its key).";
    };
    caCert = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "The CA certificate that signs the guest's HTTPS certificate, when it serves HTTPS.";
    };
    https = mkOption {
      type = types.nullOr (
        types.submodule {
          options = {
            host = mkOption {
              type = types.str;
              description = "The host name the certificate names.";
            };
            port = mkOption {
              type = types.port;
              description = "The guest's HTTPS port.";
            };
          };
        }
      );
      default = null;
      description = "Where the guest serves HTTPS.";
    };
    fwCfg = mkOption {
      type = types.attrsOf types.path;
      default = { };
      description = "Files handed to the guest at boot through QEMU fw_cfg, by name (`opt/...`).";
    };
    components = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.unit = mkOption {
            type = types.str;
            description = "The systemd unit that runs the component.";
          };
        }
      );
      default = { };
      description = "The components the image runs, by name.";
    };
    absent = mkOption {
      type = types.attrsOf types.str;
      default = { };
      description = "Components the image lacks, with the reason (checks that need them are ignored).";
    };
    properties = mkOption {
      type = types.attrsOf types.anything;
      default = { };
      description = "A product's own facts about the image (the manifest's `properties`).";
    };
    additionalSpace = mkOption {
      type = types.str;
      default = "1024M";
      description = "Free space on the disk beyond the closure.";
    };
    extraCommands = mkOption {
      type = types.lines;
      default = "";
      description = "Shell lines run in the image's builder once it is assembled in $out (e.g. checks of the disk).";
    };
  };

  config = {
    # make-disk-image labels the filesystem; stage 1 mounts it by that label.
    fileSystems."/" = {
      device = "/dev/disk/by-label/nixos";
      fsType = "ext4";
    };

    system.build.harnessImage =
      pkgs.runCommand cfg.name
        {
          manifestJson = builtins.toJSON manifest;
          passAsFile = [ "manifestJson" ];
          passthru = {
            inherit disk manifest kernelCmdline;
          };
        }
        ''
          mkdir -p "$out/fw-cfg"
          ln -s ${toplevel}/kernel "$out/bzImage"
          ln -s ${toplevel}/initrd "$out/initrd"
          ln -s ${disk}/nixos.qcow2 "$out/nixos.qcow2"
          ${lib.optionalString (cfg.caCert != null) ''ln -s ${cfg.caCert} "$out/ca.pem"''}
          ${lib.concatStrings (
            lib.mapAttrsToList (
              name: file: ''ln -s ${file} "$out/fw-cfg/${lib.replaceStrings [ "/" ] [ "-" ] name}"
              ''
            ) cfg.fwCfg
          )}
          cp "$manifestJsonPath" "$out/manifest.json"
          ${cfg.extraCommands}
        '';
  };
}
