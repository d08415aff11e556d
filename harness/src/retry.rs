//! The one wait: poll a condition on a monotonic clock until it holds, it
//! cannot hold any more, or the deadline passes; remember what it last saw.

use std::time::{Duration, Instant};

/// What one look at the condition found.
#[derive(Debug)]
pub enum Poll<T, E> {
    /// The condition holds; the wait is over.
    Ready(T),
    /// Not yet; the text says what was seen, for the timeout message.
    Pending(String),
    /// It never will (a unit reached `failed`, QEMU exited): stop now.
    Abort(E),
}

/// How a wait ended without its condition holding.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The deadline passed.
    #[error("gave up after {waited:.1?}; last seen: {last_seen}")]
    Expired {
        /// How long it waited.
        waited: Duration,
        /// What the last look found.
        last_seen: String,
    },
    /// A look found that the condition can no longer hold.
    #[error(transparent)]
    Aborted(E),
}

/// How long to wait, and how often to look.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// The longest the wait may take.
    pub timeout: Duration,
    /// The pause between two looks.
    pub interval: Duration,
}

impl Deadline {
    /// A wait of `timeout`, looking every `interval`.
    pub fn new(timeout: Duration, interval: Duration) -> Self {
        Deadline { timeout, interval }
    }
}

/// Looks at `poll` until it is ready, aborts, or `deadline` passes.
///
/// The condition is looked at once more at the deadline, so a wait never
/// ends as expired on a condition that held when it gave up.
pub fn retry<T, E>(deadline: Deadline, mut poll: impl FnMut() -> Poll<T, E>) -> Result<T, RetryError<E>> {
    let start = Instant::now();
    let end = start + deadline.timeout;
    loop {
        let last_seen = match poll() {
            Poll::Ready(value) => return Ok(value),
            Poll::Abort(e) => return Err(RetryError::Aborted(e)),
            Poll::Pending(seen) => seen,
        };
        let now = Instant::now();
        if now >= end {
            return Err(RetryError::Expired {
                waited: now - start,
                last_seen,
            });
        }
        // The poll interval of a deadline-bound wait, never a fixed delay.
        std::thread::sleep(deadline.interval.min(end - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Deadline = Deadline {
        timeout: Duration::from_millis(50),
        interval: Duration::from_millis(5),
    };

    #[test]
    fn ready_on_a_later_look() {
        let mut n = 0;
        let got: Result<i32, RetryError<()>> = retry(QUICK, || {
            n += 1;
            if n == 3 {
                Poll::Ready(n)
            } else {
                Poll::Pending(format!("n={n}"))
            }
        });
        assert_eq!(got.unwrap(), 3);
    }

    #[test]
    fn expiry_reports_the_last_state() {
        let mut n = 0;
        let got: Result<(), RetryError<()>> = retry(QUICK, || {
            n += 1;
            Poll::Pending(format!("look {n}"))
        });
        match got.unwrap_err() {
            RetryError::Expired { waited, last_seen } => {
                assert!(waited >= QUICK.timeout);
                assert_eq!(last_seen, format!("look {n}"));
            }
            other => panic!("expected expiry, got {other:?}"),
        }
    }

    #[test]
    fn abort_stops_at_once() {
        let start = Instant::now();
        let got: Result<(), _> = retry(Deadline::new(Duration::from_secs(60), Duration::from_secs(1)), || {
            Poll::Abort("unit failed")
        });
        assert!(matches!(got, Err(RetryError::Aborted("unit failed"))));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
