//! JSON lines of what happens in a run (boot stages, case start and finish),
//! one object per line with the event's time, for a pipeline to read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// Where a run's events go; a log made with [`EventLog::disabled`] drops them.
#[derive(Debug, Default)]
pub struct EventLog {
    out: Mutex<Option<BufWriter<File>>>,
}

impl EventLog {
    /// A log that writes nothing.
    pub fn disabled() -> Self {
        EventLog::default()
    }

    /// A log written to `path` (created or truncated).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(EventLog {
            out: Mutex::new(Some(BufWriter::new(File::create(path)?))),
        })
    }

    /// Writes `{"ts": …, "event": name, …fields}` as one line and flushes it,
    /// so a run that dies keeps every event before the death.
    pub fn emit(&self, name: &str, fields: Value) {
        let mut guard = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let Some(out) = guard.as_mut() else { return };
        let mut object = Map::new();
        let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        object.insert("ts".into(), Value::from((ts.as_millis() as f64) / 1000.0));
        object.insert("event".into(), Value::from(name));
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
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
        let log = EventLog::create(&path).unwrap();
        log.emit(
            "case_started",
            serde_json::json!({"case": "p0::systemd_services::nginx"}),
        );
        log.emit("case_finished", serde_json::json!({"result": "passed"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "case_started");
        assert_eq!(lines[0]["case"], "p0::systemd_services::nginx");
        assert!(lines[1]["ts"].as_f64().unwrap() > 1.7e9);
    }

    #[test]
    fn a_disabled_log_writes_nothing() {
        EventLog::disabled().emit("x", Value::Null);
    }
}
