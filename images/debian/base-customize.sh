#!/usr/bin/env bash
# mmdebstrap customize hook of the base layer, shared by every profile: the
# installed package set becomes a bootable guest with test access.
#   base-customize.sh ROOTFS
# Runs on the host with ROOTFS mounted; commands inside use chroot.
set -euo pipefail
root=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
files="$here/files/base"

in_root() { chroot "$root" "$@"; }

echo rave >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 rave rave.local\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"

# The one login user. No password: key only, and the key arrives at boot.
in_root useradd --create-home --gid users --shell /bin/bash agent
in_root passwd --lock root >/dev/null

# Static network for QEMU user networking (DHCP costs seconds under TCG).
install -D -m 0644 "$files/10-eth0.network" "$root/etc/systemd/network/10-eth0.network"
in_root systemctl enable systemd-networkd.service >/dev/null 2>&1
printf 'nameserver 10.0.2.3\n' >"$root/etc/resolv.conf"

# No host key is baked in: test access hands one over at boot.
rm -f "$root"/etc/ssh/ssh_host_*
install -D -m 0644 "$files/sshd-rave.conf" "$root/etc/ssh/sshd_config.d/10-rave.conf"
# SSH logins open no logind session (Debian's session stack for
# non-interactive services, as cron and sudo use): a session would start
# agent's user manager and a scope through a busy PID 1 on every first login,
# seconds under TCG while the guest boots.
sed -i 's/^@include common-session$/@include common-session-noninteractive/' "$root/etc/pam.d/sshd"
grep -qx '@include common-session-noninteractive' "$root/etc/pam.d/sshd"
# No dynamic motd: it runs the update-motd.d scripts on every login (the
# static /etc/motd is still shown to an interactive login).
sed -i '/pam_motd.so  *motd=\/run\/motd.dynamic/d' "$root/etc/pam.d/sshd"
if grep -q 'motd=/run/motd.dynamic' "$root/etc/pam.d/sshd"; then echo "pam_motd's dynamic motd is still in /etc/pam.d/sshd" >&2; exit 1; fi

# Test access: keys and a sudoers rule from QEMU fw_cfg, before sshd starts.
install -D -m 0755 "$files/rave-test-access" "$root/usr/local/lib/rave/rave-test-access"
install -D -m 0644 "$files/rave-test-access.service" "$root/etc/systemd/system/rave-test-access.service"
install -D -m 0644 "$files/ssh-after-test-access.conf" "$root/etc/systemd/system/ssh.service.d/10-rave-test-access.conf"
in_root systemctl enable rave-test-access.service >/dev/null 2>&1

# Boot trimming that keeps the contract: no local gettys, no maintenance timers.
for unit in getty@tty1.service serial-getty@ttyS0.service e2scrub_all.timer e2scrub_reap.service \
            apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer man-db.timer; do
  in_root systemctl mask "$unit" >/dev/null 2>&1
done

# Drivers for what QEMU's q35 machine shows but the images never use (its
# SATA controller, SMBus, LPC and TCO watchdog, the PC speaker and PS/2
# mouse) and KVM inside the guest (-cpu max offers SVM): udev would load
# each while the services start, on the same emulated CPUs.
install -D -m 0644 "$files/modprobe-not-needed.conf" "$root/etc/modprobe.d/rave-not-needed.conf"

# A small initrd: only what a virtio guest needs to mount its root.
printf 'MODULES=list\n' >"$root/etc/initramfs-tools/conf.d/rave"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >"$root/etc/initramfs-tools/modules"
in_root update-initramfs -u -k all >/dev/null

# The services of the upper layers start only where a layer enables them.
for unit in nginx.service prometheus.service prometheus-node-exporter.service prometheus-pushgateway.service \
  prometheus-nginx-exporter.service prometheus-postgres-exporter.service nftables.service; do
  in_root systemctl disable "$unit" >/dev/null 2>&1
done
# Debian's node exporter textfile collectors, if they came along, are not part of the contract.
for timer in "$root"/lib/systemd/system/prometheus-node-exporter-*.timer; do
  if [ -e "$timer" ]; then in_root systemctl mask "$(basename "$timer")" >/dev/null 2>&1; fi
done
rm -f "$root/etc/nginx/sites-enabled/default"

# Nothing in the image needs the package lists.
rm -rf "$root"/var/lib/apt/lists/*
echo "base customized"
