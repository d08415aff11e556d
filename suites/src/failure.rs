//! A case's failure: what was expected, what was seen, and the diagnostics
//! that tell a person where to look next.

use std::fmt;

use rave_harness::MachineError;

/// Why a case is red. The first line says what to look at; the rest is evidence.
#[derive(Debug)]
pub struct CaseFailure(String);

impl CaseFailure {
    /// A failure from a message (expected, seen, diagnostics).
    pub fn new(message: impl Into<String>) -> Self {
        CaseFailure(message.into())
    }

    /// The whole message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<MachineError> for CaseFailure {
    fn from(e: MachineError) -> Self {
        CaseFailure(e.to_string())
    }
}

/// What every case returns.
pub type CaseResult = Result<(), CaseFailure>;

/// Fails with "expected …, saw …" and `evidence` when `ok` is false.
pub fn expect(ok: bool, expected: &str, seen: impl fmt::Display, evidence: impl FnOnce() -> String) -> CaseResult {
    if ok {
        return Ok(());
    }
    Err(CaseFailure(format!("expected {expected}, saw {seen}\n{}", evidence())))
}
