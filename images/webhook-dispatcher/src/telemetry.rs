//! JSON logs with a trace id per request, and spans exported over OTLP/HTTP
//! when an endpoint is configured. With none, spans still get ids (for the
//! logs) and nothing is exported.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the span pipeline alive; `shutdown` flushes spans not yet exported.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs the global subscriber: JSON lines on stdout (level from
    /// `RUST_LOG`, default info) and the OpenTelemetry layer.
    pub fn init(otlp_endpoint: Option<&str>) -> anyhow::Result<Self> {
        let mut builder = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name("webhook-dispatcher").build());
        if let Some(endpoint) = otlp_endpoint {
            use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .with_http_client(reqwest::blocking::Client::new())
                .build()?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        let tracer = provider.tracer("webhook-dispatcher");
        tracing_subscriber::registry()
            .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .try_init()?;
        Ok(Telemetry { provider })
    }

    /// Flushes and stops span export.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("webhook-dispatcher: flushing spans at exit: {e}");
        }
    }
}
