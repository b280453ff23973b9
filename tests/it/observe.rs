//! What an operator sees: `/metrics` after a scripted mix of requests, and
//! the access log's fields, never a secret in either.

use std::time::{Duration, Instant};

use mmgate::Fingerprint;

use crate::cli::{spawn_standard, terminate, StandardBinary};
use crate::support::*;

/// The value of one sample line (`name{labels} value`) in a metrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn every_family_is_declared_from_the_start_with_build_and_process_metrics() {
    let (gate, _upstream, _keys) = Mmgate::with_upstream("").await;
    let text = get(&format!("http://{}/metrics", gate.admin), &[]).await.text();
    for family in [
        "mmgate_requests",
        "mmgate_request_duration_seconds",
        "mmgate_upstream_duration_seconds",
        "mmgate_rate_limited",
        "mmgate_upstream_errors",
        "mmgate_upstream_unauthorized",
        "mmgate_key_info",
        "mmgate_key_state",
        "mmgate_config_reloads",
        "mmgate_requests_in_flight",
        "mmgate_shared_limiter_unavailable",
        "mmgate_build",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} not declared:\n{text}");
    }
    for series in [
        r#"mmgate_upstream_errors_total{kind="unreachable"} 0"#,
        r#"mmgate_config_reloads_total{result="failed"} 0"#,
        "mmgate_shared_limiter_unavailable_total 0",
        &format!(r#"mmgate_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|v| v > 0.0), "{text}");
}

#[tokio::test]
async fn metrics_after_a_mix_of_requests() {
    let extra = "\n[clients.limited]\ntoken_sha256 = \"".to_owned()
        + &sha("limited-token")
        + "\"\nscopes = [\"reporting\"]\nlimit = { per_minute = 1, burst = 1 }\n";
    let (gate, _upstream, _keys) = Mmgate::with_upstream(&extra).await;
    let limited = ("authorization", "Bearer limited-token");
    assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(get(&gate.url("/reports/b"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(get(&gate.url("/reports/status/401"), &[AS_DASHBOARD]).await.status, 401);
    get(&gate.url("/erp/x"), &[AS_DASHBOARD]).await.assert_error(403, "scope_denied");
    get(&gate.url("/nowhere/at/all?token=secret"), &[]).await.assert_error(404, "no_route");
    get(&gate.url("/reports/a"), &[("authorization", "Bearer nope")]).await.assert_error(401, "unauthenticated");
    assert_eq!(get(&gate.url("/reports/a"), &[limited]).await.status, 200);
    get(&gate.url("/reports/a"), &[limited]).await.assert_error(429, "rate_limited");
    get(&gate.url("/reports/slow"), &[AS_DASHBOARD]).await.assert_error(504, "upstream_timeout");

    let metrics_url = format!("http://{}/metrics", gate.admin);
    let expected = [
        (r#"mmgate_requests_total{route="/reports/*",client="dashboard",status="200"}"#, 2.0),
        (r#"mmgate_requests_total{route="/reports/*",client="dashboard",status="401"}"#, 1.0),
        (r#"mmgate_requests_total{route="/erp/*",client="dashboard",status="403"}"#, 1.0),
        (r#"mmgate_requests_total{route="none",client="none",status="404"}"#, 1.0),
        (r#"mmgate_requests_total{route="/reports/*",client="none",status="401"}"#, 1.0),
        (r#"mmgate_requests_total{route="/reports/*",client="limited",status="429"}"#, 1.0),
        (r#"mmgate_requests_total{route="/reports/*",client="dashboard",status="504"}"#, 1.0),
        (r#"mmgate_rate_limited_total{limit="client",name="limited"}"#, 1.0),
        (r#"mmgate_upstream_unauthorized_total{key="reporting"}"#, 1.0),
        (r#"mmgate_upstream_errors_total{kind="timeout"}"#, 1.0),
        (r#"mmgate_request_duration_seconds_count{route="/reports/*"}"#, 7.0),
        (r#"mmgate_upstream_duration_seconds_count{route="/reports/*"}"#, 4.0),
        ("mmgate_requests_in_flight", 0.0),
    ];
    // The last response's record is written when its body ends: give it a moment.
    let started = Instant::now();
    let text = loop {
        let text = get(&metrics_url, &[]).await.text();
        if expected.iter().all(|(series, value)| sample(&text, series) == Some(*value)) {
            break text;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "metrics never matched:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let fingerprint = Fingerprint::of(REPORTING_KEY);
    let info = format!(r#"mmgate_key_info{{key="reporting",fingerprint="{fingerprint}",state="loaded"}}"#);
    assert_eq!(sample(&text, &info), Some(1.0), "{text}");
    assert!(text.contains("# TYPE mmgate_request_duration_seconds histogram"));
    for secret in [REPORTING_KEY, ERP_KEY, DASH_TOKEN, "limited-token", "nowhere", "secret"] {
        assert!(!text.contains(secret), "{secret} in metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_carry_every_field_as_json() {
    let StandardBinary { child, port, upstream: _upstream, keys: _keys, .. } =
        spawn_standard(&[("MMGATE_SERVER__LOG_FORMAT", "json")]).await;

    let body = r#"{"query":"query Machines { machines { name } }","operationName":"Machines"}"#;
    let reply = post(
        &format!("http://127.0.0.1:{port}/graphql"),
        &[AS_DASHBOARD, ("content-type", "application/json"), ("x-request-id", "log-test-1")],
        body,
    )
    .await;
    assert_eq!(reply.status, 200);
    // Access lines reach the output within 100 ms of the response's end.
    eventually("the access line was not written", Duration::from_secs(1), || async {
        child.logs().contains("log-test-1").then_some(())
    })
    .await;
    let (code, logs) = terminate(child);
    assert_eq!(code, 0);

    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "mmgate::access" && v["request_id"] == "log-test-1")
        .unwrap_or_else(|| panic!("no JSON access line in:\n{logs}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["route"], "/graphql");
    assert_eq!(line["client"], "dashboard");
    assert_eq!(line["operation"], "query");
    assert_eq!(line["operation_name"], "Machines");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], body.len());
    assert_eq!(line["bytes_out"], reply.body.len());
    assert!(line["duration_us"].as_u64().unwrap() >= line["upstream_latency_us"].as_u64().unwrap());
    assert_eq!(line["body_cut"], false);
    assert!(line["timestamp"].is_string());
    for secret in [REPORTING_KEY, DASH_TOKEN] {
        assert!(!logs.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_can_turn_the_access_log_off() {
    let StandardBinary { child, port, upstream: _upstream, keys: _keys, .. } =
        spawn_standard(&[("RUST_LOG", "info,mmgate::access=off")]).await;
    let reply = get(&format!("http://127.0.0.1:{port}/reports/production"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 200);
    let (code, logs) = terminate(child);
    assert_eq!(code, 0);
    assert!(logs.contains("mmgate is serving"), "{logs}");
    assert!(!logs.contains("mmgate::access"), "{logs}");
}
