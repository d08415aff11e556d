//! Progress on long work: a spinner on a terminal, plain lines otherwise.
//! During a run it is a sink of the run's events: the step in flight (what
//! a case waits for, and since when), and a line per finished trial.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rave_harness::runner::events::{Event, EventSink};
use rave_harness::steps::StepPhase;

/// A spinner on stderr when it is a terminal; hidden (and its lines plain) when not.
pub struct Progress {
    bar: ProgressBar,
    trials: AtomicUsize,
    finished: AtomicUsize,
}

impl Progress {
    /// A spinner; indicatif hides it when stderr is not a terminal.
    pub fn new() -> Self {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress {
            bar,
            trials: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        }
    }

    /// What is going on now.
    pub fn set(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// A line that stays: above the spinner on a terminal, on stderr otherwise.
    pub fn line(&self, text: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", text.as_ref());
        } else {
            self.bar.println(text.as_ref());
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn counter(&self) -> String {
        format!(
            "[{}/{}]",
            self.finished.load(Ordering::SeqCst) + 1,
            self.trials.load(Ordering::SeqCst)
        )
    }
}

impl EventSink for Progress {
    fn event(&self, event: &Event) {
        match event {
            Event::RunStarted { trials } => self.trials.store(*trials, Ordering::SeqCst),
            Event::BootStarted { guest, .. } => self.set(format!("{} booting {guest}", self.counter())),
            Event::BootFailed { guest, error, .. } => self.line(format!("{guest} could not be had: {error}")),
            Event::CaseStarted { case, .. } => self.set(format!("{} {case}", self.counter())),
            Event::Step { case, step } => match step.phase {
                StepPhase::Began => self.set(format!("{} {case}: {}", self.counter(), step.text)),
                // A long step stays in the log, so a slow run says where its time went.
                StepPhase::Finished { after } | StepPhase::GaveUp { after } if after >= Duration::from_secs(10) => {
                    self.line(format!("        {case}: {}", step.line()))
                }
                _ => {}
            },
            Event::CaseFinished(record) => {
                self.finished.fetch_add(1, Ordering::SeqCst);
                self.line(format!(
                    "{:<7} {} ({:.1} s)",
                    record.label(),
                    record.name,
                    record.duration.as_secs_f64()
                ));
                if let Some(message) = record.outcome.message() {
                    self.line(indent(message));
                }
            }
            Event::RunFinished(_) => self.set("done"),
            Event::BootFinished { .. } | Event::GuestReport(_) => {}
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("        {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
