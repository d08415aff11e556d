# P1 = P0 plus security hardening (shared/spec/images.md):
# - sshd: key only, no root, one user, few tries;
# - firewall (nftables): input policy drop; lo, established/related, tcp 22
#   and 3002 accepted; refused packets dropped, not rejected;
# - TLS and secrets: as P0 already has them (nixos/p0.nix): nginx's
#   certificate and key, and the webhook token, come from sops-nix into
#   /run/secrets, 0400, owned by the reader.
{ lib, ... }:
{
  imports = [ ./p0.nix ];

  rave.profile = lib.mkOverride 999 "p1";

  services.openssh.settings = {
    PasswordAuthentication = false;
    KbdInteractiveAuthentication = false;
    PermitRootLogin = "no";
    AllowUsers = [ "agent" ];
    # Not a declared option: the settings' freeform type renders it as is.
    MaxAuthTries = 3;
  };

  # The NixOS firewall on its nftables backend: table inet nixos-fw, chain
  # input with "policy drop", lo trusted, ct established/related accepted,
  # then only the ports below. sshd's openFirewall (default true) adds 22 too.
  networking.nftables.enable = true;
  networking.firewall = {
    enable = true;
    allowedTCPPorts = [
      22
      3002
    ];
    allowPing = false;
    rejectPackets = false;
  };

  rave.manifest.components.firewall = "nftables.service";
}
