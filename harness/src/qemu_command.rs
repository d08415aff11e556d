//! The QEMU command line as data: one builder, pure, snapshot-tested.
//!
//! Each group of flags comes from a small function with the reason for it, so
//! a change to one concern shows up as a change to one group in the snapshot.

use std::path::PathBuf;

/// The accelerator a guest runs on, once chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's multi-threaded software emulation.
    Tcg,
}

/// A TCP port of the guest reachable on the host's loopback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    /// The port on 127.0.0.1 of the host.
    pub host_port: u16,
    /// The port inside the guest.
    pub guest_port: u16,
}

/// A file handed to the guest through QEMU's fw_cfg (`/sys/firmware/qemu_fw_cfg/by_name/NAME/raw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfgFile {
    /// The fw_cfg name, `opt/...`.
    pub name: String,
    /// The host file whose content the guest sees.
    pub path: PathBuf,
}

/// Everything that decides a guest's QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    /// The QEMU binary.
    pub binary: PathBuf,
    /// A name for `ps` and the logs, e.g. `rave-p0`.
    pub name: String,
    /// The accelerator.
    pub accel: Accel,
    /// The CPU model QEMU emulates under TCG (`max`, or a named model such as
    /// `Nehalem`); under KVM the host's CPU is passed through instead.
    pub tcg_cpu: String,
    /// Guest RAM in MiB.
    pub ram_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// The kernel for direct boot.
    pub kernel: PathBuf,
    /// The initrd for direct boot.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub append: String,
    /// The disk the guest writes: always a throwaway copy-on-write overlay.
    pub overlay: PathBuf,
    /// Guest ports forwarded to the host's loopback.
    pub forwards: Vec<PortForward>,
    /// Where the serial console is written.
    pub serial_log: PathBuf,
    /// The QMP control socket.
    pub qmp_socket: PathBuf,
    /// Files handed to the guest at boot (test access).
    pub fw_cfg: Vec<FwCfgFile>,
    /// A saved guest state to restore instead of booting (see [`crate::warm_start`]).
    pub incoming: Option<PathBuf>,
}

impl QemuCommand {
    /// The full argv, binary first.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = vec![self.binary.display().to_string()];
        for group in [
            self.base_args(),
            self.accel_args(),
            self.size_args(),
            self.kernel_args(),
            self.drive_args(),
            self.net_args(),
            self.console_args(),
            self.control_args(),
            self.fw_cfg_args(),
            self.incoming_args(),
        ] {
            argv.extend(group);
        }
        argv
    }

    /// The argv with what may differ between two runs of the same guest
    /// (name, paths of per-run files, host ports, the state to restore)
    /// replaced by placeholders: a saved state fits a command line exactly
    /// when the shapes are equal.
    pub fn shape(&self) -> Vec<String> {
        let mut same = self.clone();
        same.name = "NAME".into();
        same.overlay = "OVERLAY".into();
        same.serial_log = "SERIAL".into();
        same.qmp_socket = "QMP".into();
        for forward in &mut same.forwards {
            forward.host_port = 0;
        }
        for file in &mut same.fw_cfg {
            file.path = "FWCFG".into();
        }
        same.incoming = None;
        same.argv()
    }

    /// Restore a saved state (QEMU 7.2 has no `file:` migration, so `exec:cat`);
    /// the guest runs as soon as it is loaded.
    fn incoming_args(&self) -> Vec<String> {
        match &self.incoming {
            Some(state) => {
                let quoted = shlex::try_quote(&state.display().to_string())
                    .map(|q| q.into_owned())
                    .unwrap_or_else(|_| state.display().to_string());
                args(&["-incoming", &format!("exec:cat {quoted}")])
            }
            None => Vec::new(),
        }
    }

    /// No default devices, no display, no config files of the host: the guest
    /// has exactly what this command line gives it. `-no-reboot` turns a guest
    /// panic (the kernel runs with `panic=-1`) into a QEMU exit we see at once.
    fn base_args(&self) -> Vec<String> {
        args(&[
            "-name",
            &self.name,
            "-machine",
            "q35",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
    }

    /// TCG: multi-threaded (the default, but said), with a 192 MiB translation
    /// cache instead of about 1 GiB: QEMU's RSS for a 3072 MiB P2 guest is
    /// about 0.9 GiB instead of 1.4 (256 MiB: 1.0 GiB; smaller: slower boots;
    /// see BENCHMARKS.md). The CPU model is `tcg_cpu` (`max` by default: every
    /// instruction TCG can emulate; Node needs more than the qemu64 baseline).
    fn accel_args(&self) -> Vec<String> {
        match self.accel {
            Accel::Kvm => args(&["-accel", "kvm", "-cpu", "host"]),
            Accel::Tcg => args(&["-accel", "tcg,thread=multi,tb-size=192", "-cpu", &self.tcg_cpu]),
        }
    }

    /// The guest's size: QEMU_RAM_MB and QEMU_CPUS.
    fn size_args(&self) -> Vec<String> {
        args(&["-m", &self.ram_mb.to_string(), "-smp", &self.cpus.to_string()])
    }

    /// Direct kernel boot: no bootloader, no firmware menu. `panic=-1` reboots
    /// at once on a panic, which `-no-reboot` turns into an exit.
    fn kernel_args(&self) -> Vec<String> {
        args(&[
            "-kernel",
            &self.kernel.display().to_string(),
            "-initrd",
            &self.initrd.display().to_string(),
            "-append",
            &format!("{} panic=-1", self.append),
        ])
    }

    /// The overlay on virtio-blk. `cache=unsafe`: the overlay is thrown away
    /// after the run, so flushes to the host disk buy nothing.
    fn drive_args(&self) -> Vec<String> {
        args(&[
            "-drive",
            &format!(
                "file={},if=none,id=root,format=qcow2,cache=unsafe",
                self.overlay.display()
            ),
            "-device",
            "virtio-blk-pci,drive=root",
            "-device",
            "virtio-rng-pci",
        ])
    }

    /// User networking; every forward is bound to the host's 127.0.0.1 only.
    fn net_args(&self) -> Vec<String> {
        let mut netdev = String::from("user,id=net0");
        for f in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host_port, f.guest_port));
        }
        args(&["-netdev", &netdev, "-device", "virtio-net-pci,netdev=net0"])
    }

    /// The serial console goes to a file the harness tails for diagnostics.
    fn console_args(&self) -> Vec<String> {
        args(&[
            "-chardev",
            &format!("file,id=serial0,path={}", self.serial_log.display()),
            "-serial",
            "chardev:serial0",
        ])
    }

    /// QMP on a unix socket in the guest's state directory, for a clean powerdown.
    fn control_args(&self) -> Vec<String> {
        args(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", self.qmp_socket.display()),
        ])
    }

    /// Test access: files the guest reads from fw_cfg at boot.
    fn fw_cfg_args(&self) -> Vec<String> {
        self.fw_cfg
            .iter()
            .flat_map(|f| {
                [
                    "-fw_cfg".to_string(),
                    format!("name={},file={}", f.name, f.path.display()),
                ]
            })
            .collect()
    }
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(accel: Accel) -> QemuCommand {
        QemuCommand {
            binary: "/usr/bin/qemu-system-x86_64".into(),
            name: "rave-p0".into(),
            accel,
            tcg_cpu: "max".into(),
            ram_mb: 3072,
            cpus: 2,
            kernel: "/cache/images/debian-p0-0123/vmlinuz".into(),
            initrd: "/cache/images/debian-p0-0123/initrd.img".into(),
            append: "root=/dev/vda rw console=ttyS0".into(),
            overlay: "/state/overlay.qcow2".into(),
            forwards: vec![
                PortForward {
                    host_port: 40022,
                    guest_port: 22,
                },
                PortForward {
                    host_port: 40443,
                    guest_port: 3002,
                },
            ],
            serial_log: "/state/serial.log".into(),
            qmp_socket: "/state/qmp.sock".into(),
            fw_cfg: vec![FwCfgFile {
                name: "opt/rave/authorized_keys".into(),
                path: "/state/authorized_keys".into(),
            }],
            incoming: None,
        }
    }

    #[test]
    fn a_restore_adds_only_incoming_and_keeps_the_shape() {
        let mut restore = example(Accel::Tcg);
        restore.incoming = Some("/cache/warm/x/vmstate".into());
        restore.name = "rave-fault-p0".into();
        restore.overlay = "/other/overlay.qcow2".into();
        restore.forwards[0].host_port = 41000;
        let (cold, warm) = (example(Accel::Tcg), restore);
        assert_eq!(cold.shape(), warm.shape());
        let argv = warm.argv();
        assert_eq!(argv[argv.len() - 2..], ["-incoming", "exec:cat /cache/warm/x/vmstate"]);
    }

    #[test]
    fn the_shape_changes_with_what_the_saved_state_depends_on() {
        let base = example(Accel::Tcg);
        for change in [
            |c: &mut QemuCommand| c.ram_mb = 4096,
            |c: &mut QemuCommand| c.cpus = 1,
            |c: &mut QemuCommand| c.accel = Accel::Kvm,
            |c: &mut QemuCommand| c.append.push_str(" quiet"),
            |c: &mut QemuCommand| c.kernel = "/other/vmlinuz".into(),
        ] {
            let mut changed = base.clone();
            change(&mut changed);
            assert_ne!(base.shape(), changed.shape());
        }
    }

    #[test]
    fn tcg_command_line() {
        insta::assert_debug_snapshot!(example(Accel::Tcg).argv());
    }

    #[test]
    fn kvm_changes_only_the_accelerator_group() {
        let (tcg, kvm) = (example(Accel::Tcg).argv(), example(Accel::Kvm).argv());
        let differing: Vec<_> = tcg.iter().zip(&kvm).filter(|(a, b)| a != b).collect();
        assert_eq!(differing.len(), 2, "{differing:?}");
        assert!(kvm.contains(&"kvm".to_string()));
    }

    #[test]
    fn every_forward_binds_loopback_only() {
        let argv = example(Accel::Tcg).argv();
        let netdev = argv.iter().find(|a| a.starts_with("user,")).unwrap();
        assert_eq!(netdev.matches("hostfwd=tcp:127.0.0.1:").count(), 2);
        assert!(!netdev.contains("hostfwd=tcp::"));
    }
}
