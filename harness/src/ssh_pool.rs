//! The SSH connections to one guest: cases running at once each get a
//! connection of their own (a new one costs over a second under TCG, so idle
//! ones are kept), up to a limit well under sshd's `MaxStartups`.

use std::ops::Deref;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many connections one guest gets at most: sshd's default
/// `MaxStartups` is 10, and each connection costs the guest's CPU.
pub const MAX_CONNECTIONS: usize = 4;

/// A pool of connections (`T` is an SSH session; tests use anything).
#[derive(Debug)]
pub struct ConnectionPool<T> {
    state: Mutex<PoolState<T>>,
    returned: Condvar,
    max: usize,
}

#[derive(Debug)]
struct PoolState<T> {
    idle: Vec<T>,
    /// Connections open: idle ones plus those taken.
    open: usize,
    /// Bumped by [`ConnectionPool::clear`]: connections taken before it are closed on return.
    generation: u64,
}

/// Why no connection could be taken.
#[derive(Debug, thiserror::Error)]
pub enum PoolError<E> {
    /// Every connection stayed busy for the whole wait.
    #[error("all {max} SSH connections stayed busy for {waited:.1?}")]
    Busy {
        /// The pool's limit.
        max: usize,
        /// How long it waited for one to come back.
        waited: Duration,
    },
    /// Opening a new connection failed.
    #[error(transparent)]
    Connect(E),
}

impl<T> ConnectionPool<T> {
    /// An empty pool of at most `max` connections (at least one).
    pub fn new(max: usize) -> Self {
        ConnectionPool {
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            returned: Condvar::new(),
            max: max.max(1),
        }
    }

    /// An idle connection; else a new one from `connect` while fewer than
    /// the limit are open; else the first one returned within `timeout`.
    pub fn take<E>(
        &self,
        timeout: Duration,
        connect: impl FnOnce() -> Result<T, E>,
    ) -> Result<Pooled<'_, T>, PoolError<E>> {
        let start = Instant::now();
        let (mut state, waited) = self
            .returned
            .wait_timeout_while(self.lock(), timeout, |s| s.idle.is_empty() && s.open >= self.max)
            .unwrap_or_else(|p| p.into_inner());
        if let Some(connection) = state.idle.pop() {
            return Ok(self.pooled(connection, state.generation));
        }
        if state.open >= self.max {
            debug_assert!(waited.timed_out());
            return Err(PoolError::Busy {
                max: self.max,
                waited: start.elapsed(),
            });
        }
        state.open += 1;
        let generation = state.generation;
        drop(state);
        match connect() {
            Ok(connection) => Ok(self.pooled(connection, generation)),
            Err(e) => {
                self.forget();
                Err(PoolError::Connect(e))
            }
        }
    }

    /// Adds a connection opened elsewhere (a boot's first login) as idle; it
    /// counts toward the limit, which it may pass by one after a new login.
    pub fn add(&self, connection: T) {
        let mut state = self.lock();
        state.open += 1;
        state.idle.push(connection);
        drop(state);
        self.returned.notify_one();
    }

    /// Closes the idle connections; those taken close when they come back.
    pub fn clear(&self) {
        let mut state = self.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open -= idle.len();
        state.generation += 1;
        drop(state);
        drop(idle);
        self.returned.notify_all();
    }

    /// How many connections are open (idle or taken).
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open
    }

    fn pooled(&self, connection: T, generation: u64) -> Pooled<'_, T> {
        Pooled {
            pool: self,
            connection: Some(connection),
            generation,
        }
    }

    /// A taken connection is gone (it failed, or was never opened).
    fn forget(&self) {
        self.lock().open -= 1;
        self.returned.notify_one();
    }

    /// A taken connection comes back: idle again, or closed when the pool
    /// was cleared since it was taken.
    fn give_back(&self, connection: T, generation: u64) {
        let mut state = self.lock();
        if generation == state.generation {
            state.idle.push(connection);
        } else {
            state.open -= 1;
        }
        drop(state);
        self.returned.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection taken from a pool; it goes back when dropped, unless discarded.
#[derive(Debug)]
pub struct Pooled<'a, T> {
    pool: &'a ConnectionPool<T>,
    connection: Option<T>,
    generation: u64,
}

impl<T> Pooled<'_, T> {
    /// Closes the connection instead of returning it (it failed).
    pub fn discard(mut self) {
        drop(self.connection.take());
        self.pool.forget();
    }
}

impl<T> Deref for Pooled<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.connection
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl<T> Drop for Pooled<'_, T> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection, self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    const QUICK: Duration = Duration::from_millis(50);

    fn ok(n: u32) -> impl FnOnce() -> Result<u32, Infallible> {
        move || Ok(n)
    }

    #[test]
    fn an_idle_connection_is_reused_before_a_new_one_opens() {
        let pool = ConnectionPool::new(2);
        drop(pool.take(QUICK, ok(1)).unwrap());
        let again = pool.take(QUICK, || Err::<u32, &str>("must not connect")).unwrap();
        assert_eq!(*again, 1);
        assert_eq!(pool.open(), 1);
    }

    #[test]
    fn no_more_than_the_limit_open_and_a_busy_pool_says_so() {
        let pool = ConnectionPool::new(2);
        let a = pool.take(QUICK, ok(1)).unwrap();
        let b = pool.take(QUICK, ok(2)).unwrap();
        let busy = pool.take(QUICK, ok(3)).unwrap_err();
        assert!(matches!(busy, PoolError::Busy { max: 2, .. }), "{busy:?}");
        assert_eq!(pool.open(), 2);
        drop((a, b));
    }

    #[test]
    fn a_waiting_taker_gets_the_connection_given_back() {
        let pool = ConnectionPool::new(1);
        let held = pool.take(QUICK, ok(7)).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| *pool.take(Duration::from_secs(10), ok(8)).unwrap());
            drop(held);
            assert_eq!(waiter.join().unwrap(), 7);
        });
    }

    #[test]
    fn a_discarded_or_failed_connection_frees_its_place() {
        let pool = ConnectionPool::new(1);
        pool.take(QUICK, ok(1)).unwrap().discard();
        assert_eq!(pool.open(), 0);
        assert!(matches!(
            pool.take(QUICK, || Err("refused")),
            Err(PoolError::Connect("refused"))
        ));
        assert_eq!(pool.open(), 0);
        assert_eq!(*pool.take(QUICK, ok(2)).unwrap(), 2);
    }

    #[test]
    fn clear_closes_idle_connections_and_those_taken_on_return() {
        let pool = ConnectionPool::new(2);
        pool.add(1);
        let taken = pool.take(QUICK, ok(9)).unwrap();
        assert_eq!(*taken, 1);
        pool.take(QUICK, ok(2)).map(drop).unwrap();
        pool.clear();
        assert_eq!(pool.open(), 1, "the taken one is still open");
        drop(taken);
        assert_eq!(
            pool.open(),
            0,
            "a connection taken before the clear is closed on return"
        );
        assert_eq!(*pool.take(QUICK, ok(3)).unwrap(), 3);
    }
}
