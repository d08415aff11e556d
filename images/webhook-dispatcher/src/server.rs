//! The HTTP side: `/webhook`, `/metrics`, `/health`, a trace id on every request.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::trace::TraceContextExt;
use serde_json::json;
use tracing::{field, info, info_span, warn, Instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::auth::Secret;
use crate::event::Delivery;
use crate::metrics::Metrics;
use crate::store::{Store, Stored};

/// What every handler shares.
pub struct App {
    /// The X-Gitlab-Token secret.
    pub secret: Secret,
    /// The event store.
    pub store: Store,
    /// The metrics.
    pub metrics: Metrics,
    /// The largest body accepted.
    pub max_body_bytes: usize,
}

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/webhook", post(receive).fallback(method_not_allowed))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .layer(middleware::from_fn(trace_request))
        .with_state(app)
}

/// A refusal: status and the reason, sent as `{"error": …}`.
struct Refusal(StatusCode, String);

async fn receive(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    app.metrics.requests.inc();
    let (status, answer) = match accept(&app, &headers, body).await {
        Ok(Stored::New(id)) => {
            app.metrics.processed.inc();
            info!(event_id = id, "event stored");
            (StatusCode::ACCEPTED, json!({ "status": "stored", "id": id }))
        }
        Ok(Stored::Duplicate) => {
            app.metrics.deduplicated.inc();
            info!("redelivery acknowledged, not stored again");
            (StatusCode::OK, json!({ "status": "duplicate" }))
        }
        Err(Refusal(status, reason)) => {
            warn!(status = status.as_u16(), reason = %reason, "webhook refused");
            (status, json!({ "error": reason }))
        }
    };
    if !status.is_success() {
        app.metrics.errors.inc();
    }
    app.metrics.duration.observe(started.elapsed().as_secs_f64());
    (status, Json(answer)).into_response()
}

/// Authenticate, read, parse, store: the first step that fails decides the answer.
async fn accept(app: &App, headers: &HeaderMap, body: Body) -> Result<Stored, Refusal> {
    // Exactly one token: a second one (a proxy's, an attacker's) makes the request ambiguous.
    let mut tokens = headers.get_all("x-gitlab-token").iter();
    let token = match (tokens.next(), tokens.next()) {
        (Some(token), None) => token,
        (None, _) => return Err(Refusal(StatusCode::UNAUTHORIZED, "missing X-Gitlab-Token".into())),
        (Some(_), Some(_)) => return Err(Refusal(StatusCode::UNAUTHORIZED, "more than one X-Gitlab-Token".into())),
    };
    if !app.secret.matches(token.as_bytes()) {
        return Err(Refusal(StatusCode::UNAUTHORIZED, "invalid X-Gitlab-Token".into()));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let too_large = || {
        Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {} bytes", app.max_body_bytes),
        )
    };
    if declared.is_some_and(|n| n > app.max_body_bytes) {
        return Err(too_large());
    }
    // Fails when the body passes the limit (or the sender goes away mid-body).
    let bytes = axum::body::to_bytes(body, app.max_body_bytes)
        .await
        .map_err(|_| too_large())?;
    let delivery = Delivery::parse(headers, &bytes).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    tracing::Span::current().record("delivery_key", field::display(&delivery.key));
    app.store.store(&delivery).await.map_err(|e| {
        warn!(error = %e, "event not stored");
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "event store unavailable; nothing was stored, retry later".into(),
        )
    })
}

async fn method_not_allowed(State(app): State<Arc<App>>) -> Response {
    app.metrics.requests.inc();
    app.metrics.errors.inc();
    let mut response = (StatusCode::METHOD_NOT_ALLOWED, Json(json!({ "error": "use POST" }))).into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok", "database": "ok" }))).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "degraded", "database": e.to_string() })),
        )
            .into_response(),
    }
}

/// One span per request, whose trace id is logged and returned as `X-Trace-Id`.
async fn trace_request(request: Request, next: Next) -> Response {
    let span = info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        trace_id = field::Empty,
        delivery_key = field::Empty,
    );
    let mut trace_id = span.context().span().span_context().trace_id().to_string();
    if trace_id.chars().all(|c| c == '0') {
        // No OpenTelemetry layer (a test without the global subscriber): make one.
        use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
        trace_id = RandomIdGenerator::default().new_trace_id().to_string();
    }
    span.record("trace_id", field::display(&trace_id));
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "answered"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}
