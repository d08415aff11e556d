//! The dispatcher's Prometheus metrics, with the names of the contract.

use std::time::Instant;

use prometheus::{Counter, Encoder, Gauge, Histogram, HistogramOpts, Opts, Registry, TextEncoder};

/// Every metric, registered once.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// Requests to `/webhook`, whatever their outcome.
    pub requests: Counter,
    /// Requests to `/webhook` answered with anything but 2xx.
    pub errors: Counter,
    /// Time from request to response on `/webhook`.
    pub duration: Histogram,
    /// Events stored (new deliveries).
    pub processed: Counter,
    /// Redeliveries acknowledged and not stored again.
    pub deduplicated: Counter,
    uptime: Gauge,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = Counter::with_opts(Opts::new(name, help)).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let requests = counter(
            "webhook_requests_total",
            "Requests to /webhook, whatever their outcome.",
        );
        let errors = counter(
            "webhook_errors_total",
            "Requests to /webhook answered with a non-2xx status.",
        );
        let processed = counter("webhook_events_processed_total", "Events stored.");
        let deduplicated = counter(
            "webhook_events_deduplicated_total",
            "Redeliveries acknowledged and not stored again.",
        );
        let duration = Histogram::with_opts(HistogramOpts::new(
            "webhook_duration_seconds",
            "Time to answer a request to /webhook.",
        ))
        .expect("valid metric");
        registry.register(Box::new(duration.clone())).expect("registered once");
        let uptime = Gauge::with_opts(Opts::new(
            "webhook_dispatcher_uptime_seconds",
            "Seconds since the dispatcher started.",
        ))
        .expect("valid metric");
        registry.register(Box::new(uptime.clone())).expect("registered once");
        Metrics {
            registry,
            started: Instant::now(),
            requests,
            errors,
            duration,
            processed,
            deduplicated,
            uptime,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.uptime.set(self.started.elapsed().as_secs_f64());
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
