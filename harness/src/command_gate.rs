//! Cases share a guest and run at once; a few steps must see the guest
//! alone (a case that counts requests must not count another case's). The
//! gate lets every command through, except while one thread holds an
//! exclusive section: then only that thread's commands pass.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The gate in front of one guest's commands.
#[derive(Debug, Default)]
pub struct CommandGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// The thread inside an exclusive section, and how deep.
    owner: Option<(ThreadId, usize)>,
    /// Commands on their way to the guest.
    in_flight: usize,
}

/// A wait at the gate passed its deadline.
#[derive(Debug, thiserror::Error)]
#[error("waited {waited:.1?} for {what}")]
pub struct GateTimeout {
    /// What was waited for.
    pub what: &'static str,
    /// How long.
    pub waited: Duration,
}

/// A command on its way; the gate counts it until it is dropped.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a CommandGate,
}

impl CommandGate {
    /// Lets a command through: at once, unless another thread holds an
    /// exclusive section, then when it ends (at most `timeout`).
    pub fn pass(&self, timeout: Duration) -> Result<Pass<'_>, GateTimeout> {
        let me = std::thread::current().id();
        let mut state = self.wait_while(timeout, "another case's exclusive section to end", |s| {
            s.owner.is_some_and(|(owner, _)| owner != me)
        })?;
        state.in_flight += 1;
        Ok(Pass { gate: self })
    }

    /// Runs `section` with no other thread's command reaching the guest:
    /// waits (at most `timeout`) for commands already on their way, holds
    /// new ones back until it ends. Sections nest within one thread.
    pub fn exclusive<T>(&self, timeout: Duration, section: impl FnOnce() -> T) -> Result<T, GateTimeout> {
        let me = std::thread::current().id();
        {
            let mut state = self.lock();
            if let Some((owner, depth)) = &mut state.owner {
                if *owner == me {
                    *depth += 1;
                    drop(state);
                    let _end = SectionEnd { gate: self };
                    return Ok(section());
                }
            }
        }
        let start = Instant::now();
        let mut state = self.wait_while(timeout, "another case's exclusive section to end", |s| {
            s.owner.is_some()
        })?;
        state.owner = Some((me, 1));
        drop(state);
        // From here the section is ours: it ends (and wakes the others) on every path.
        let end = SectionEnd { gate: self };
        let left = timeout.saturating_sub(start.elapsed());
        drop(self.wait_while(left, "other cases' commands to finish", |s| s.in_flight > 0)?);
        let value = section();
        drop(end);
        Ok(value)
    }

    fn wait_while(
        &self,
        timeout: Duration,
        what: &'static str,
        blocked: impl Fn(&GateState) -> bool,
    ) -> Result<MutexGuard<'_, GateState>, GateTimeout> {
        let start = Instant::now();
        let (state, waited) = self
            .changed
            .wait_timeout_while(self.lock(), timeout, |s| blocked(s))
            .unwrap_or_else(|p| p.into_inner());
        if waited.timed_out() && blocked(&state) {
            return Err(GateTimeout {
                what,
                waited: start.elapsed(),
            });
        }
        Ok(state)
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.lock().in_flight -= 1;
        self.gate.changed.notify_all();
    }
}

/// Leaves one level of an exclusive section when dropped.
struct SectionEnd<'a> {
    gate: &'a CommandGate,
}

impl Drop for SectionEnd<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.owner = match state.owner {
            Some((owner, depth)) if depth > 1 => Some((owner, depth - 1)),
            _ => None,
        };
        drop(state);
        self.gate.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    const LONG: Duration = Duration::from_secs(10);

    #[test]
    fn commands_pass_side_by_side_without_a_section() {
        let gate = CommandGate::default();
        let a = gate.pass(LONG).unwrap();
        let b = gate.pass(LONG).unwrap();
        drop((a, b));
    }

    #[test]
    fn the_owner_passes_inside_its_section_and_sections_nest() {
        let gate = CommandGate::default();
        let got = gate
            .exclusive(LONG, || {
                drop(gate.pass(LONG).unwrap());
                gate.exclusive(LONG, || 42).unwrap()
            })
            .unwrap();
        assert_eq!(got, 42);
        // Fully released: another thread gets its own section.
        std::thread::scope(|s| s.spawn(|| gate.exclusive(LONG, || ()).unwrap()).join().unwrap());
    }

    #[test]
    fn another_threads_command_waits_for_the_section_and_times_out_with_what_it_waited_for() {
        let gate = CommandGate::default();
        let inside = AtomicBool::new(false);
        gate.exclusive(LONG, || {
            std::thread::scope(|s| {
                let other = s.spawn(|| gate.pass(Duration::from_millis(50)).map(drop));
                let err = other.join().unwrap().unwrap_err();
                assert!(err.to_string().contains("exclusive section"), "{err}");
            });
            inside.store(true, Ordering::SeqCst);
        })
        .unwrap();
        assert!(inside.load(Ordering::SeqCst));
        drop(gate.pass(LONG).unwrap());
    }

    #[test]
    fn a_section_waits_for_commands_already_on_their_way() {
        let gate = CommandGate::default();
        let pass = gate.pass(LONG).unwrap();
        std::thread::scope(|s| {
            let section = s.spawn(|| gate.exclusive(Duration::from_millis(50), || ()));
            let err = section.join().unwrap().unwrap_err();
            assert!(err.to_string().contains("commands to finish"), "{err}");
        });
        drop(pass);
        // The timed-out section left the gate open.
        std::thread::scope(|s| s.spawn(|| gate.exclusive(LONG, || ()).unwrap()).join().unwrap());
    }
}
