# Test access, only in the images the harness boots (the flake's …-test
# outputs; never in …-production), and a module any NixOS configuration can
# import (the flake's nixosModules.testAccess). Nothing is committed or baked in: the run's
# SSH key and a host key to pin reach the guest at boot through QEMU fw_cfg
# (opt/rave/authorized_keys, opt/rave/ssh_host_ed25519_key), as on the Debian
# flavor (images/debian/files/base/rave-test-access). The age identity
# (opt/rave/age-identity) is not test access: every image reads it, see
# nixos/p0.nix. Here also: sudo for agent, and the tools the cases run in
# the guest (suites/src/*.rs).
{
  lib,
  pkgs,
  ...
}:
let
  fwCfg = "/sys/firmware/qemu_fw_cfg/by_name/opt/rave";
in
{
  systemd.services.rave-test-access = {
    description = "rave test access: SSH keys handed over by QEMU fw_cfg";
    wantedBy = [
      "multi-user.target"
      "sshd.service"
    ];
    # Before sshd-keygen, which would otherwise make a host key of its own.
    before = [
      "sshd.service"
      "sshd-keygen.service"
    ];
    after = [ "local-fs.target" ];
    unitConfig = {
      DefaultDependencies = false;
      ConditionVirtualization = "vm";
    };
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
    path = [
      pkgs.kmod
      pkgs.coreutils
      pkgs.openssh
    ];
    script = ''
      # Built into some kernels: then there is nothing to load, and the check below decides.
      modprobe qemu_fw_cfg 2>/dev/null || echo "rave-test-access: qemu_fw_cfg not loaded as a module"
      base=${fwCfg}
      if [ ! -r "$base/authorized_keys/raw" ]; then
        echo "rave-test-access: no test access handed over; nothing to do"
        exit 0
      fi
      install -d -m 0700 -o agent -g users /home/agent/.ssh
      install -m 0600 -o agent -g users "$base/authorized_keys/raw" /home/agent/.ssh/authorized_keys
      if [ -r "$base/ssh_host_ed25519_key/raw" ]; then
        install -d -m 0755 /etc/ssh
        install -m 0600 -o root -g root "$base/ssh_host_ed25519_key/raw" /etc/ssh/ssh_host_ed25519_key
        ssh-keygen -y -f /etc/ssh/ssh_host_ed25519_key >/etc/ssh/ssh_host_ed25519_key.pub
      fi
      echo "rave-test-access: keys installed"
    '';
  };

  # The user the harness logs in as, and sshd (a configuration of one's own
  # may have neither yet).
  users.users.agent = {
    isNormalUser = lib.mkDefault true;
    group = lib.mkDefault "users";
  };
  services.openssh.enable = lib.mkDefault true;

  # Inspection and fault injection need root; only test images get this.
  security.sudo.extraRules = [
    {
      users = [ "agent" ];
      commands = [
        {
          command = "ALL";
          options = [ "NOPASSWD" ];
        }
      ];
    }
  ];

  # What the cases run in the guest: curl, ss, systemctl/journalctl/systemd-run/
  # systemd-socket-activate (systemd), nft, sshd -T, psql (the PostgreSQL
  # module adds it), findmnt, stat, grep -r, awk, timeout, bash /dev/tcp.
  environment.systemPackages = with pkgs; [
    curl
    openssl
    iproute2
    nftables
    openssh
    util-linux
    procps
    gawk
    gnugrep
    gnused
    findutils
    coreutils
    bashInteractive
  ];

  # security::firewall_config starts its canary as
  # `systemd-socket-activate … --inetd /bin/echo canary`; NixOS has only /bin/sh.
  systemd.tmpfiles.rules = [ "L+ /bin/echo - - - - ${lib.getExe' pkgs.coreutils "echo"}" ];
}
