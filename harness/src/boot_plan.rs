//! How a guest is booted, as pure data: the options a caller chooses, and
//! the QEMU command they make for an image. Nothing here starts, reads or
//! writes anything, so the command line, and its shape (what a saved state
//! must match), are known without a machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::host::Tools;
use crate::image::Image;
use crate::qemu_command::{Accel, FwCfgFile, PortForward, QemuCommand};
use crate::test_access;

/// How to boot a guest. Every value is the caller's: the core reads no environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootOptions {
    /// A name for logs and `ps`, e.g. `rave-p0`.
    pub name: String,
    /// QEMU and qemu-img.
    pub tools: Tools,
    /// Guest RAM in MiB.
    pub ram_mb: u32,
    /// Guest CPUs.
    pub cpus: u32,
    /// The accelerator (see [`crate::accel::decide`]).
    pub accel: Accel,
    /// The CPU model under TCG (`-cpu`; see [`BootOptions::DEFAULT_TCG_CPU`]).
    pub tcg_cpu: String,
    /// Kernel arguments appended to the image's command line.
    pub kernel_args: Option<String>,
    /// Where the guest's state directory is made (see [`crate::reaper`]).
    pub state_root: PathBuf,
    /// Keep the state directory (overlay, logs, keys) after the guest is gone.
    pub keep_state: bool,
    /// How long the boot may take until SSH answers.
    pub boot_timeout: Duration,
    /// The deadline of each guest command unless said otherwise.
    pub command_timeout: Duration,
}

impl BootOptions {
    /// The deadline of each guest command unless said otherwise.
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
    /// The CPU model under TCG unless said otherwise: every instruction TCG
    /// can emulate.
    pub const DEFAULT_TCG_CPU: &'static str = "max";

    /// Defaults for `name`: 3072 MiB, 2 CPUs, TCG, 300 s to boot, 60 s per
    /// command, state directory under `state_root`, removed when the guest goes.
    pub fn new(name: impl Into<String>, tools: Tools, state_root: impl Into<PathBuf>) -> Self {
        BootOptions {
            name: name.into(),
            tools,
            ram_mb: 3072,
            cpus: 2,
            accel: Accel::Tcg,
            tcg_cpu: Self::DEFAULT_TCG_CPU.into(),
            kernel_args: None,
            state_root: state_root.into(),
            keep_state: false,
            boot_timeout: Duration::from_secs(300),
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// What differs from one boot of a guest to the next: its files and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFiles {
    /// The guest's state directory (serial log, QMP socket).
    pub state_dir: PathBuf,
    /// The copy-on-write overlay the guest writes.
    pub overlay: PathBuf,
    /// The test access files handed over through fw_cfg.
    pub access: Vec<FwCfgFile>,
    /// The host port forwarded to the guest's SSH.
    pub ssh_port: u16,
    /// The host port forwarded to the guest's HTTPS port, when the image serves HTTPS.
    pub https_port: Option<u16>,
    /// A saved state to restore instead of booting.
    pub incoming: Option<PathBuf>,
}

impl RunFiles {
    /// Placeholders in the place of every per-run value (see [`shape`]).
    fn placeholder() -> Self {
        RunFiles {
            state_dir: "STATE".into(),
            overlay: "OVERLAY".into(),
            access: test_access::FW_CFG_NAMES
                .iter()
                .map(|name| FwCfgFile {
                    name: (*name).into(),
                    path: "FWCFG".into(),
                })
                .collect(),
            ssh_port: 0,
            https_port: Some(0),
            incoming: None,
        }
    }
}

/// The QEMU command that boots `image` with `options` and `run`'s files.
pub fn command(image: &Image, options: &BootOptions, run: &RunFiles) -> QemuCommand {
    let mut forwards = vec![PortForward {
        host_port: run.ssh_port,
        guest_port: 22,
    }];
    if let (Some(https), Some(host_port)) = (&image.manifest.https, run.https_port) {
        forwards.push(PortForward {
            host_port,
            guest_port: https.port,
        });
    }
    QemuCommand {
        binary: options.tools.qemu.clone(),
        name: options.name.clone(),
        accel: options.accel,
        tcg_cpu: options.tcg_cpu.clone(),
        ram_mb: options.ram_mb,
        cpus: options.cpus,
        kernel: image.kernel(),
        initrd: image.initrd(),
        append: match &options.kernel_args {
            Some(extra) => format!("{} {extra}", image.manifest.kernel_cmdline),
            None => image.manifest.kernel_cmdline.clone(),
        },
        overlay: run.overlay.clone(),
        forwards,
        serial_log: run.state_dir.join("serial.log"),
        qmp_socket: run.state_dir.join("qmp.sock"),
        fw_cfg: run
            .access
            .iter()
            .cloned()
            .chain(
                image
                    .fw_cfg_files()
                    .into_iter()
                    .map(|(name, path)| FwCfgFile { name, path }),
            )
            .collect(),
        incoming: run.incoming.clone(),
    }
}

/// The shape of the command that boots `image` with `options`: everything but
/// names, per-run paths and host ports. A saved state fits a boot exactly
/// when the shapes are equal (see [`QemuCommand::shape`]).
pub fn shape(image: &Image, options: &BootOptions) -> Vec<String> {
    command(image, options, &RunFiles::placeholder()).shape()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Manifest;

    fn image(https: bool) -> Image {
        let mut json = serde_json::json!({
            "schema": 2, "profile": "web", "kernel": "vmlinuz", "initrd": "initrd.img",
            "disk": "disk.qcow2", "kernel_cmdline": "root=/dev/vda", "ssh_user": "agent",
            "fw_cfg": { "opt/example/key": "key.txt" }
        });
        if https {
            json["https"] = serde_json::json!({ "host": "web.local", "port": 443 });
        }
        Image {
            dir: "/images/web".into(),
            manifest: serde_json::from_value::<Manifest>(json).unwrap(),
        }
    }

    fn options() -> BootOptions {
        let tools = Tools {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_img: "/usr/bin/qemu-img".into(),
        };
        BootOptions::new("web-1", tools, "/tmp/states")
    }

    #[test]
    fn the_shape_leaves_out_what_each_run_chooses() {
        let mut other = options();
        other.name = "web-2".into();
        assert_eq!(shape(&image(true), &options()), shape(&image(true), &other));
        other.ram_mb = 2048;
        assert_ne!(shape(&image(true), &options()), shape(&image(true), &other));
        let mut args = options();
        args.kernel_args = Some("quiet".into());
        assert_ne!(shape(&image(true), &options()), shape(&image(true), &args));
        let mut cpu = options();
        cpu.tcg_cpu = "Nehalem".into();
        assert_ne!(shape(&image(true), &options()), shape(&image(true), &cpu));
        let argv = command(&image(true), &cpu, &RunFiles::placeholder()).argv().join(" ");
        assert!(argv.contains("-cpu Nehalem"), "{argv}");
    }

    #[test]
    fn the_https_forward_goes_to_the_port_the_image_names() {
        let run = RunFiles {
            https_port: Some(40443),
            ..RunFiles::placeholder()
        };
        let argv = command(&image(true), &options(), &run).argv().join(" ");
        assert!(argv.contains("hostfwd=tcp:127.0.0.1:40443-:443"), "{argv}");
        assert!(argv.contains("name=opt/example/key,file=/images/web/key.txt"), "{argv}");
        let without = command(&image(false), &options(), &run).argv().join(" ");
        assert!(!without.contains(":40443-"), "{without}");
    }
}
