//! What happens in a run, as one typed stream: the run, boots, trials and
//! their steps, guests' figures, the end. The runner only emits; sinks turn
//! the stream into a progress display, JSON lines, a report.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::report::{RunReport, TrialRecord};
use super::trial::TrialKind;
use crate::facts::{BootStage, GuestReport};
use crate::steps::Step;

/// One thing that happened in a run. As JSON: `{"event": "case_started", …}`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins with this many trials.
    RunStarted {
        /// Trials selected.
        trials: usize,
    },
    /// A guest starts booting (or restoring).
    BootStarted {
        /// The guest.
        guest: String,
        /// Its group.
        profile: String,
    },
    /// A guest is up.
    BootFinished {
        /// The guest.
        guest: String,
        /// Its group.
        profile: String,
        /// Its boot stages.
        stages: Vec<BootStage>,
        /// QEMU's process id.
        pid: Option<u32>,
        /// Its state directory.
        state_dir: Option<PathBuf>,
    },
    /// A guest could not be had: every trial on it is a harness error.
    BootFailed {
        /// The guest.
        guest: String,
        /// Its group.
        profile: String,
        /// Why.
        error: String,
    },
    /// A trial begins.
    CaseStarted {
        /// The trial's name.
        case: String,
        /// Its group.
        profile: String,
        /// Case or fault test.
        kind: TrialKind,
    },
    /// A trial's step began or ended.
    Step {
        /// The trial's name.
        case: String,
        /// The step.
        #[serde(flatten)]
        step: Step,
    },
    /// A trial ended.
    CaseFinished(TrialRecord),
    /// A guest's figures, taken before it went down.
    GuestReport(GuestReport),
    /// The run ended.
    RunFinished(RunReport),
}

/// Where a run's events go.
pub trait EventSink: Send + Sync {
    /// `event` happened.
    fn event(&self, event: &Event);
}

/// A sink that drops every event.
#[derive(Debug, Default)]
pub struct Discard;

impl EventSink for Discard {
    fn event(&self, _: &Event) {}
}

/// Every event to each of several sinks, in order.
#[derive(Default, Clone)]
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Fanout {
    fn event(&self, event: &Event) {
        for sink in &self.0 {
            sink.event(event);
        }
    }
}

/// Events as JSON lines, one object per line with the event's time (`ts`,
/// Unix seconds), each flushed at once so a run that dies keeps every event
/// before the death.
#[derive(Debug)]
pub struct JsonLines {
    out: Mutex<BufWriter<File>>,
}

impl JsonLines {
    /// A log written to `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(JsonLines {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }
}

impl EventSink for JsonLines {
    fn event(&self, event: &Event) {
        let mut object = serde_json::Map::new();
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        object.insert("ts".into(), Value::from((ts.as_millis() as f64) / 1000.0));
        if let Ok(Value::Object(fields)) = serde_json::to_value(event) {
            object.extend(fields);
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // An event that cannot be written must not fail the run it describes.
        let _ = writeln!(out, "{}", Value::Object(object)).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_per_line_with_time_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = JsonLines::create(&path).unwrap();
        log.event(&Event::CaseStarted {
            case: "p0::systemd_services::nginx".into(),
            profile: "p0".into(),
            kind: TrialKind::Case,
        });
        log.event(&Event::Step {
            case: "p0::systemd_services::nginx".into(),
            step: Step {
                text: "waiting for unit nginx.service to be active".into(),
                phase: crate::steps::StepPhase::Finished {
                    after: std::time::Duration::from_millis(2100),
                },
            },
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "case_started");
        assert_eq!(lines[0]["case"], "p0::systemd_services::nginx");
        assert_eq!(lines[0]["kind"], "case");
        assert!(lines[0]["ts"].as_f64().unwrap() > 1.7e9);
        assert_eq!(lines[1]["event"], "step");
        assert_eq!(lines[1]["phase"], "finished");
        assert_eq!(lines[1]["after"], 2.1);
    }
}
