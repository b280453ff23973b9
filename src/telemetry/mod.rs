//! OpenTelemetry traces (`[telemetry]`, off by default): one span per
//! request with the access line's fields as attributes, a child span for the
//! upstream call, and W3C `traceparent` sent upstream. A caller's
//! `traceparent` is continued only with `trust_incoming`.
//!
//! Spans are tracing spans (target `mmgate::trace`) turned into OpenTelemetry
//! ones by tracing-opentelemetry, and exported over OTLP/HTTP from a thread
//! of their own through a bounded queue (`queue`): a collector that is slow
//! or gone never slows or fails a request; spans that do not fit are dropped
//! and counted. Off, the request path creates no span at all.

mod headers;
mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, Method};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use headers::{HeaderExtractor, HeaderInjector};
pub use queue::{dropped, exported};

use crate::config::TelemetrySettings;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRUST_INCOMING: AtomicBool = AtomicBool::new(false);
/// The sampling ratio as a threshold on a uniform 64-bit draw.
static THRESHOLD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Whether spans are made (telemetry was configured at start).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts exporting to `settings.endpoint`; the layer that turns
/// `mmgate::trace` spans into OpenTelemetry spans.
pub fn layer<S>(settings: &TelemetrySettings) -> Result<impl tracing_subscriber::Layer<S>, String>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.endpoint.to_string())
        .with_timeout(settings.export_timeout)
        .build()
        .map_err(|e| format!("telemetry: cannot build the OTLP exporter: {e}"))?;
    let processor = queue::Queue::start(exporter, settings.max_queued_spans)?;
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // A continued trace keeps its caller's decision; new ones were drawn
        // at the ratio before any span was made (`traced`), so keep them all.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("mmgate");
    let _ = PROVIDER.set(provider);
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    TRUST_INCOMING.store(settings.trust_incoming, Ordering::Relaxed);
    let threshold = (settings.sampling_ratio * u64::MAX as f64) as u64;
    THRESHOLD.store(if settings.sampling_ratio >= 1.0 { u64::MAX } else { threshold }, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Whether a request with `headers` gets spans: a trusted caller's trace
/// decides for itself (its sampled flag); others are drawn at the ratio here,
/// so that an unsampled request costs no span at all.
pub fn traced(headers: &HeaderMap) -> bool {
    if !enabled() {
        return false;
    }
    if TRUST_INCOMING.load(Ordering::Relaxed) && headers.contains_key("traceparent") {
        return true;
    }
    let threshold = THRESHOLD.load(Ordering::Relaxed);
    threshold == u64::MAX || draw() < threshold
}

/// A uniform 64-bit draw (xorshift64*, per thread, seeded once from the OS).
fn draw() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Whether `metadata` is one of the spans made here (the log lines do not want them).
pub fn is_trace(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == "mmgate::trace"
}

/// The span of a request arriving with `method` and `headers`, continuing
/// the caller's trace when `trust_incoming`.
pub fn request_span(method: &Method, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: "mmgate::trace",
        "request",
        otel.name = method.as_str(),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
    );
    if TRUST_INCOMING.load(Ordering::Relaxed) {
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
        let _ = span.set_parent(parent);
    }
    span
}

/// The span of the upstream call (a child of the current request's), whose
/// context is sent upstream as `traceparent` in `headers`.
pub fn upstream_span(headers: &mut HeaderMap) -> Span {
    let span = tracing::info_span!(
        target: "mmgate::trace",
        "upstream",
        otel.name = "upstream",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
    );
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut HeaderInjector(headers)));
    span
}

/// Records the upstream's answer (or failure) on its span, and the key by
/// name and fingerprint (never the key).
pub fn upstream_answered<T>(
    span: &Span,
    answered: &Result<(axum::response::Response, T), crate::forward::UpstreamError>,
    (key, fingerprint): (&str, crate::keys::Fingerprint),
) {
    span.set_attribute("mmgate.key", key.to_owned());
    span.set_attribute("mmgate.key.fingerprint", fingerprint.to_string());
    match answered {
        Ok((response, _)) => {
            let status = response.status().as_u16();
            span.set_attribute("http.response.status_code", i64::from(status));
            if status >= 500 {
                span.record("otel.status_code", "error");
            }
        }
        Err(e) => {
            span.set_attribute("error.type", e.to_string());
            span.record("otel.status_code", "error");
        }
    }
}

/// Exports what is queued, for a clean exit.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}
