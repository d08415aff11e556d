//! What a guest costs the host: QEMU's peak resident memory and CPU time,
//! sampled with sysinfo while the guest runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// How often QEMU's memory is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// QEMU's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QemuUsage {
    /// Peak resident memory seen, in bytes.
    pub peak_rss_bytes: u64,
    /// CPU time (user and system) so far.
    pub cpu_time: Duration,
}

/// Samples one process's memory in a thread until dropped, keeping the peak.
#[derive(Debug)]
pub struct UsageSampler {
    pid: u32,
    peak: Arc<AtomicU64>,
    cpu_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    /// Dropped to end the sampling thread at once, not after its interval.
    waker: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl UsageSampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let cpu_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut wakers = Vec::new();
        let thread = {
            let (peak, cpu_ms, stop) = (Arc::clone(&peak), Arc::clone(&cpu_ms), Arc::clone(&stop));
            let (waker, wake) = mpsc::channel::<()>();
            wakers.push(waker);
            std::thread::Builder::new()
                .name(format!("usage-{pid}"))
                .spawn(move || {
                    let Ok(mut system) = System::new() else { return };
                    // A sample each interval until told to stop (or the sampler is gone).
                    while !stop.load(Ordering::Relaxed) && sample(&mut system, pid, &peak, &cpu_ms) {
                        if !matches!(wake.recv_timeout(SAMPLE_INTERVAL), Err(mpsc::RecvTimeoutError::Timeout)) {
                            break;
                        }
                    }
                })
                .ok()
        };
        UsageSampler {
            pid,
            peak,
            cpu_ms,
            stop,
            waker: wakers.pop(),
            thread,
        }
    }

    /// The figures so far, with a fresh sample taken now.
    pub fn usage(&self) -> QemuUsage {
        if let Ok(mut system) = System::new() {
            sample(&mut system, self.pid, &self.peak, &self.cpu_ms);
        }
        QemuUsage {
            peak_rss_bytes: self.peak.load(Ordering::Relaxed),
            cpu_time: Duration::from_millis(self.cpu_ms.load(Ordering::Relaxed)),
        }
    }
}

impl Drop for UsageSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.waker.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One sample; false when the process is gone.
fn sample(system: &mut System, pid: u32, peak: &AtomicU64, cpu_ms: &AtomicU64) -> bool {
    let pid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_memory().with_cpu(),
    );
    match system.process(pid) {
        Some(process) => {
            peak.fetch_max(process.memory(), Ordering::Relaxed);
            cpu_ms.fetch_max(process.accumulated_cpu_time(), Ordering::Relaxed);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let sampler = UsageSampler::start(std::process::id());
        let usage = sampler.usage();
        assert!(usage.peak_rss_bytes > 0);
    }
}
