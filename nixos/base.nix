# Common to every rave NixOS image (p0, p1, p2; production and test):
# the rave.* options, the one login user, static QEMU user networking, sshd,
# a system trimmed for direct kernel boot. Every option set here is listed,
# with the nixpkgs file that declares it, in nixos/README.md.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.rave;
in
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  options.rave = {
    profile = lib.mkOption {
      type = lib.types.enum [
        "p0"
        "p1"
        "p2"
      ];
      description = "The profile this image is (set by nixos/p0.nix, p1.nix, p2.nix).";
    };

    safeMode = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        SAFE mode (shared/spec/images.md). The flake sets it from SAFE (only
        under --impure; pure evaluation keeps the default) or per output
        (…-safe / …-unsafe).
      '';
    };

    safeModeValues = lib.mkOption {
      type = lib.types.attrs;
      readOnly = true;
      default = import ./safe-mode.nix cfg.safeMode;
      defaultText = lib.literalExpression "import ./safe-mode.nix config.rave.safeMode";
      description = "The values SAFE mode decides: nixos/safe-mode.nix applied to rave.safeMode.";
    };

    testAccess = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Whether this is a test image (nixos/test-access.nix sets it).";
    };

    agentAuthorizedKeys = lib.mkOption {
      type = lib.types.listOf lib.types.singleLineStr;
      default = [ ];
      description = "SSH keys that may log in as agent on a production image (test images get theirs at boot).";
    };

    manifest = {
      components = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        description = "Contract component -> the systemd unit that runs it, for manifest.json.";
      };
      limits = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        description = "Contract component -> the MemoryMax its unit must have, for manifest.json.";
      };
      absent = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        description = "Contract component -> why this image lacks it, for manifest.json.";
      };
    };
  };

  config = {
    system.stateVersion = "25.05";

    # Direct kernel boot: QEMU gets the kernel, initrd and command line from
    # the image directory (nixos/image.nix), so there is no boot loader.
    boot.loader.grub.enable = false;
    boot.kernelParams = [ "console=ttyS0" ];
    # fw_cfg must be readable before stage 2 activation: sops-nix reads the
    # age identity from it there (nixos/p0.nix).
    boot.initrd.kernelModules = [ "qemu_fw_cfg" ];

    # Static address for QEMU user networking (DHCP costs seconds under TCG),
    # eth0 as the Debian flavor names it (net.ifnames=0 comes from this option).
    networking.hostName = "rave";
    networking.usePredictableInterfaceNames = false;
    networking.useNetworkd = true;
    networking.useDHCP = false;
    networking.interfaces.eth0.ipv4.addresses = [
      {
        address = "10.0.2.15";
        prefixLength = 24;
      }
    ];
    networking.defaultGateway = {
      address = "10.0.2.2";
      interface = "eth0";
    };
    networking.nameservers = [ "10.0.2.3" ];
    # P0 is the development base; nixos/p1.nix turns the firewall on.
    networking.firewall.enable = lib.mkDefault false;

    # The one login user. No password: key only.
    users.users.agent = {
      isNormalUser = true;
      group = "users";
      openssh.authorizedKeys.keys = cfg.agentAuthorizedKeys;
    };

    # No host key is baked in: sshd-keygen makes one on a production image's
    # first boot, test access hands one over before that (nixos/test-access.nix).
    services.openssh = {
      enable = true;
      hostKeys = [
        {
          type = "ed25519";
          path = "/etc/ssh/ssh_host_ed25519_key";
        }
      ];
      settings.UseDns = false;
    };

    # Trimmed: no manuals, no channel, no default extras (perl, rsync, strace).
    documentation.enable = false;
    documentation.nixos.enable = false;
    nix.channel.enable = false;
    environment.defaultPackages = [ ];
  };
}
