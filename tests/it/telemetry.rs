//! OpenTelemetry: one span per request with the access line's attributes, a
//! child span for the upstream call whose context goes upstream as
//! `traceparent`, a caller's trace continued only when trusted, and a
//! collector that is gone never failing a request. Run as the binary: the
//! exporter is set up with the process's logging.

use std::time::Duration;

use crate::cli::{spawn, terminate};
use crate::support::collector::{attribute, Collector};
use crate::support::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// The binary with `[telemetry]` lines, in front of a fresh upstream.
async fn traced(telemetry: &str) -> (crate::cli::Running, u16, u16, Upstream, KeyDir) {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let (port, admin, toml) = on_free_ports(&config(&upstream.url(), &keys, &format!("\n[telemetry]\n{telemetry}\n")));
    let path = keys.path("mmgate.toml");
    std::fs::write(&path, toml).unwrap();
    let child = spawn(&path, &[], admin);
    (child, port, admin, upstream, keys)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_and_its_upstream_call_are_spans_and_the_call_carries_traceparent() {
    let collector = Collector::start().await;
    let (child, port, _admin, upstream, _keys) = traced(&format!("otlp_endpoint = \"{}\"", collector.url())).await;
    let reply = get(
        &format!("http://127.0.0.1:{port}/reports/production?day=1"),
        &[AS_DASHBOARD, ("traceparent", &traceparent()), ("x-request-id", "traced-1")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let spans = eventually("both spans exported", Duration::from_secs(10), || async {
        let spans = collector.spans();
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let request =
        spans.iter().find(|s| s.name == "GET /reports/*").unwrap_or_else(|| panic!("no request span in {names:?}"));
    let call = spans.iter().find(|s| s.name == "upstream").expect("the upstream call's span");
    assert_eq!(call.trace_id, request.trace_id);
    assert_eq!(call.parent_span_id, request.span_id);
    assert_ne!(hex(&request.trace_id), CALLER_TRACE, "an untrusted caller's trace is not continued");
    assert!(request.parent_span_id.is_empty());
    for (key, value) in [
        ("http.route", "/reports/*"),
        ("url.path", "/reports/production"),
        ("mmgate.client", "dashboard"),
        ("http.response.status_code", "200"),
        ("mmgate.request_id", "traced-1"),
        ("mmgate.scope", "reporting"),
        ("mmgate.by", "upstream"),
    ] {
        assert_eq!(attribute(request, key).as_deref(), Some(value), "{key}");
    }
    let fingerprint = mmgate::Fingerprint::of(REPORTING_KEY).to_string();
    assert_eq!(attribute(call, "mmgate.key.fingerprint"), Some(fingerprint));
    assert_eq!(attribute(call, "http.response.status_code").as_deref(), Some("200"));
    // The upstream saw the call's span as its parent.
    let sent = upstream.only();
    let expected = format!("00-{}-{}-01", hex(&call.trace_id), hex(&call.span_id));
    assert_eq!(sent.header("traceparent"), Some(expected.as_str()));
    for body in collector.bodies() {
        for secret in [REPORTING_KEY, DASH_TOKEN] {
            assert!(!body.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} exported");
        }
    }
    let (code, _) = terminate(child);
    assert_eq!(code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_callers_trace_is_continued() {
    let collector = Collector::start().await;
    let telemetry = format!("otlp_endpoint = \"{}\"\ntrust_incoming = true", collector.url());
    let (child, port, _admin, _upstream, _keys) = traced(&telemetry).await;
    let url = format!("http://127.0.0.1:{port}/reports/x");
    assert_eq!(get(&url, &[AS_DASHBOARD, ("traceparent", &traceparent())]).await.status, 200);
    let request = eventually("the request's span", Duration::from_secs(10), || async {
        collector.spans().into_iter().find(|s| s.name == "GET /reports/*")
    })
    .await;
    assert_eq!(hex(&request.trace_id), CALLER_TRACE);
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    terminate(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_gone_fails_no_request_and_its_spans_are_counted_as_dropped() {
    let gone = free_port();
    let telemetry =
        format!("otlp_endpoint = \"http://127.0.0.1:{gone}\"\nmax_queued_spans = 1\nexport_timeout = \"200ms\"");
    let (child, port, admin, upstream, _keys) = traced(&telemetry).await;
    for n in 0..20 {
        let started = std::time::Instant::now();
        assert_eq!(get(&format!("http://127.0.0.1:{port}/reports/{n}"), &[AS_DASHBOARD]).await.status, 200);
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    }
    assert_eq!(upstream.requests().len(), 20);
    eventually("dropped spans are counted", Duration::from_secs(10), || async {
        let text = get(&format!("http://127.0.0.1:{admin}/metrics"), &[]).await.text();
        (metric(&text, "mmgate_telemetry_spans_dropped_total").unwrap_or(0.0) >= 1.0).then_some(())
    })
    .await;
    terminate(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_make_no_span_and_a_trusted_sampled_caller_still_does() {
    let collector = Collector::start().await;
    let telemetry = format!("otlp_endpoint = \"{}\"\nsampling_ratio = 0.0\ntrust_incoming = true", collector.url());
    let (child, port, admin, upstream, _keys) = traced(&telemetry).await;
    for n in 0..5 {
        assert_eq!(get(&format!("http://127.0.0.1:{port}/reports/{n}"), &[AS_DASHBOARD]).await.status, 200);
    }
    assert!(upstream.requests().iter().all(|r| r.header("traceparent").is_none()), "no trace, no traceparent");
    let url = format!("http://127.0.0.1:{port}/reports/sampled");
    assert_eq!(get(&url, &[AS_DASHBOARD, ("traceparent", &traceparent())]).await.status, 200);
    let spans = eventually("the caller's sampled trace", Duration::from_secs(10), || async {
        let spans = collector.spans();
        (spans.len() >= 2).then_some(spans)
    })
    .await;
    assert!(spans.iter().all(|s| hex(&s.trace_id) == CALLER_TRACE), "only the caller's trace was exported");
    metric_reaches(([127, 0, 0, 1], admin).into(), "mmgate_telemetry_spans_exported_total", 2.0).await;
    terminate(child);
}
