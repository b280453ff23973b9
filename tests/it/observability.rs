//! The Grafana dashboard and the Prometheus rules in `deploy/observability`
//! query only metrics mmgate exports.

use std::collections::BTreeSet;

use crate::quota::{metrics_of, start};

/// Every `mmgate_*` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("mmgate_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        // `mmgate_*` inside a longer word (a uid, a title) is not a metric.
        let word_start = at == 0 || !rest[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if word_start {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether `/metrics` (`exported`) has `name`: a sample of it, or a family it belongs to.
fn exported_has(exported: &str, name: &str) -> bool {
    let base = ["_total", "_bucket", "_count", "_sum", "_info"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    exported.lines().any(|line| {
        line.starts_with(&format!("{name}{{"))
            || line.starts_with(&format!("{name} "))
            || line.starts_with(&format!("# TYPE {base} "))
            || line.starts_with(&format!("# TYPE {name} "))
    })
}

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_query_only_exported_metrics() {
    let (gate, _fake, _keys) = start("", |t| t).await;
    let exported = metrics_of(&gate).await;
    for file in ["deploy/observability/grafana-dashboard.json", "deploy/observability/alerts.yml"] {
        let text = std::fs::read_to_string(file).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        let missing: Vec<&String> = names.iter().filter(|n| !exported_has(&exported, n)).collect();
        assert!(missing.is_empty(), "{file} queries metrics mmgate does not export: {missing:?}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/observability/grafana-dashboard.json").unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() > 10);
}

#[test]
fn metric_names_are_found_whole() {
    let names = metric_names(r#"rate(mmgate_requests_total{x="mmgate_no"}[5m]) "uid": "xmmgate_uid" mmgate_key_state"#);
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["mmgate_key_state", "mmgate_no", "mmgate_requests_total"]);
}
