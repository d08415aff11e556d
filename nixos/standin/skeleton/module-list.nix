# rave stand-in (issue 17): the NixOS base modules of the stand-in, in place
# of nixpkgs' nixos/modules/module-list.nix: the real module files the
# stand-in holds (PROVENANCE), then the stub module for every namespace the
# stand-in has no real module for. Paths are relative to the stand-in's
# rave-standin/ directory. Files a listed module imports itself
# (nginx/vhost-options.nix, misc/label.nix, the exporters, nixos/lib/*.nix, …)
# are not listed again.
[
  ../nixos/modules/misc/assertions.nix
  ../nixos/modules/misc/extra-arguments.nix
  ../nixos/modules/misc/ids.nix
  ../nixos/modules/misc/version.nix
  ../nixos/modules/config/users-groups.nix
  ../nixos/modules/config/system-path.nix
  ../nixos/modules/config/nix-channel.nix
  ../nixos/modules/security/sudo.nix
  ../nixos/modules/services/databases/postgresql.nix
  ../nixos/modules/services/monitoring/grafana.nix
  ../nixos/modules/services/monitoring/prometheus/default.nix
  ../nixos/modules/services/monitoring/prometheus/pushgateway.nix
  ../nixos/modules/services/monitoring/prometheus/exporters.nix
  ../nixos/modules/services/networking/firewall.nix
  ../nixos/modules/services/networking/firewall-iptables.nix
  ../nixos/modules/services/networking/firewall-nftables.nix
  ../nixos/modules/services/networking/nftables.nix
  ../nixos/modules/services/networking/ssh/sshd.nix
  ../nixos/modules/services/web-servers/nginx/default.nix
  ../nixos/modules/system/boot/kernel.nix
  ../nixos/modules/system/boot/loader/grub/grub.nix
  ../nixos/modules/system/boot/systemd.nix
  ../nixos/modules/system/boot/systemd/tmpfiles.nix
  ../nixos/modules/system/build.nix
  ../nixos/modules/system/etc/etc.nix
  ../nixos/modules/tasks/filesystems.nix
  ../nixos/modules/tasks/network-interfaces.nix
  ./stub-module.nix
]
