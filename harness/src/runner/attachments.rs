//! Files kept from a red trial's guest, before it goes down: the journal of
//! each unit that is failed or that the trial needs, and the serial console
//! log when the console printed anything (a guest restored from a saved
//! state shows only what came after its restore; the step log says so). They go under the run's attachments folder, one folder per trial
//! (`p0__systemd_services__nginx/`, a rerun's in `rerun-N/` inside it), and
//! JUnit links them as `[[ATTACHMENT|path]]` in the trial's `system-out`,
//! the form GitLab (its first link) and Jenkins' attachments plugin read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::trial::Trial;
use crate::{quote, Machine};

/// How many journal lines are kept per unit.
const JOURNAL_LINES: usize = 2000;

/// How long reading the failed units or one unit's journal may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many units' journals per trial (the failed ones first).
const MAX_UNITS: usize = 6;

/// What was kept: the files written, and a line for each that could not be.
#[derive(Debug, Default)]
pub(super) struct Kept {
    pub files: Vec<PathBuf>,
    pub problems: Vec<String>,
}

/// The folder of `trial`'s files under `dir`: its name with `::` as `__`
/// and anything but letters, digits, `-`, `_` and `.` as `_`.
pub(super) fn folder(dir: &Path, trial: &str, rerun: usize) -> PathBuf {
    let name: String = trial
        .replace("::", "__")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let folder = dir.join(name);
    if rerun == 0 {
        folder
    } else {
        folder.join(format!("rerun-{rerun}"))
    }
}

/// Keeps the journals and serial log of `machine` for `trial` (attempt
/// `rerun`, 0 for the first) under `dir`.
pub(super) fn keep(dir: &Path, trial: &Trial, rerun: usize, machine: &Machine) -> Kept {
    let mut kept = Kept::default();
    let folder = folder(dir, &trial.name, rerun);
    if let Err(e) = std::fs::create_dir_all(&folder) {
        kept.problems
            .push(format!("attachments: could not create {}: {e}", folder.display()));
        return kept;
    }
    let mut write = |name: &str, bytes: &[u8]| {
        let path = folder.join(name);
        match std::fs::write(&path, bytes) {
            Ok(()) => kept.files.push(path),
            Err(e) => kept
                .problems
                .push(format!("attachments: could not write {}: {e}", path.display())),
        }
    };
    let (units, said) = units(trial, machine);
    if let Some(said) = said {
        write("failed-units.txt", said.as_bytes());
    }
    for unit in units {
        let command = format!(
            "sudo journalctl --no-pager -o short-precise -b -n {JOURNAL_LINES} -u {}",
            quote(&unit)
        );
        let text = match machine.execute_within(&command, READ_TIMEOUT) {
            Ok(out) if out.status == 0 => out.stdout_bytes,
            Ok(out) => format!(
                "(journalctl exited {}: {})\n{}",
                out.status,
                out.stderr.trim(),
                out.stdout
            )
            .into_bytes(),
            Err(e) => format!("(the journal of {unit} could not be read: {e})\n").into_bytes(),
        };
        write(&format!("journal-{unit}.txt"), &text);
    }
    if let Some(serial) = machine.serial_log() {
        match std::fs::read(&serial) {
            Ok(bytes) if bytes.is_empty() => kept.problems.push(
                "attachments: no serial.log: the serial console printed nothing (a restored guest's shows only what came after its restore)".into(),
            ),
            Ok(bytes) => write("serial.log", &bytes),
            Err(e) => kept
                .problems
                .push(format!("attachments: could not read {}: {e}", serial.display())),
        }
    }
    kept
}

/// The units whose journals are kept: those failed on the guest, then those
/// the trial needs (as the image's manifest names them), at most
/// [`MAX_UNITS`]; and what `systemctl --failed` said, or why it could not.
fn units(trial: &Trial, machine: &Machine) -> (Vec<String>, Option<String>) {
    let mut units: Vec<String> = Vec::new();
    let said = match machine.execute_within(
        "systemctl list-units --state=failed --plain --no-legend --no-pager",
        READ_TIMEOUT,
    ) {
        Ok(out) if out.status == 0 => {
            units.extend(
                out.stdout
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(String::from),
            );
            (!out.stdout.trim().is_empty()).then(|| out.stdout.clone())
        }
        Ok(out) => Some(format!(
            "(systemctl list-units --state=failed exited {}: {})\n",
            out.status,
            out.stderr.trim()
        )),
        Err(e) => Some(format!("(the failed units could not be read: {e})\n")),
    };
    let manifest = &machine.image().manifest;
    units.extend(
        trial
            .needs
            .iter()
            .filter_map(|c| manifest.unit(c).ok())
            .map(String::from),
    );
    let mut seen = std::collections::BTreeSet::new();
    units.retain(|u| seen.insert(u.clone()));
    units.truncate(MAX_UNITS);
    (units, said)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trials_folder_is_a_plain_name() {
        let dir = Path::new("artifacts/attachments");
        assert_eq!(
            folder(dir, "fault::p0::systemd_services::nginx", 0),
            Path::new("artifacts/attachments/fault__p0__systemd_services__nginx")
        );
        assert_eq!(
            folder(dir, "web::a b/../c", 2),
            Path::new("artifacts/attachments/web__a_b_.._c/rerun-2")
        );
    }
}
