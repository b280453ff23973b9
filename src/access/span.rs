//! The request's trace span gets the access line's fields as attributes
//! (OpenTelemetry's HTTP names where there is one, `mmgate.*` otherwise):
//! never a key, a token or query text, as in the line itself.

use opentelemetry::trace::TraceContextExt;
use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::AccessLine;

/// Records `line` on `span`, names the span `METHOD route`, and marks 5xx as errors.
pub(super) fn record(span: &tracing::Span, line: &AccessLine<'_>) {
    let text = |key: &'static str, value: &str| KeyValue::new(key, value.to_owned());
    let number = |key: &'static str, value: u64| KeyValue::new(key, i64::try_from(value).unwrap_or(i64::MAX));
    let mut attributes = vec![
        text("http.request.method", line.method),
        text("http.route", line.route),
        text("mmgate.request_id", line.request_id),
        text("mmgate.client", line.client),
        text("client.address", line.peer),
        number("http.response.status_code", line.status.into()),
        text("mmgate.by", line.by),
        number("http.request.body.size", line.bytes_in),
        number("http.response.body.size", line.bytes_out),
    ];
    let optional_text = [
        ("url.path", line.path),
        ("user_agent.original", line.user_agent),
        ("mmgate.code", line.code),
        ("mmgate.limit", line.limit),
        ("graphql.operation.type", line.operation),
        ("graphql.operation.name", line.operation_name),
        ("mmgate.cache", line.cache),
        ("mmgate.scope", line.scope),
        ("mmgate.would_refuse", line.would_refuse),
    ];
    attributes.extend(optional_text.into_iter().filter_map(|(k, v)| v.map(|v| text(k, v))));
    let optional_number = [
        ("mmgate.upstream_status", line.upstream_status.map(u64::from)),
        ("mmgate.graphql.operations", line.operations),
        ("mmgate.graphql.depth", line.depth),
        ("mmgate.graphql.nodes", line.nodes),
        ("mmgate.upstream_latency_us", line.upstream_latency_us),
        ("mmgate.wait_us", line.wait_us),
    ];
    attributes.extend(optional_number.into_iter().filter_map(|(k, v)| v.map(|v| number(k, v))));
    for attribute in attributes {
        span.set_attribute(attribute.key, attribute.value);
    }
    // Named once the route is known. The OpenTelemetry span may exist already
    // (its context went upstream): rename it there, not through the field.
    let name = format!("{} {}", line.method, line.route);
    span.context().span().update_name(name.clone());
    span.record("otel.name", name.as_str());
    if line.status >= 500 {
        span.record("otel.status_code", "error");
    }
}
