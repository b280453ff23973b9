//! `mmgate suggest`: from the access logs of real traffic (shadow mode on),
//! a configuration that, enforced and replayed against the same traffic,
//! refuses nothing and grants no scope the traffic did not use.

use std::io::Write as _;
use std::time::Duration;

use crate::cli::{mmgate, run, spawn, terminate};
use crate::quota::gql;
use crate::support::*;

fn clients() -> String {
    format!(
        r#"
[clients.writer]
token_sha256 = "{writer}"
scopes = ["reporting"]

[clients.prober]
token_sha256 = "{prober}"
scopes = ["reporting"]
mode = "enforce"

[clients.idle]
token_sha256 = "{idle}"
scopes = ["reporting"]
"#,
        writer = sha("writer-token"),
        prober = sha("prober-token"),
        idle = sha("idle-token"),
    )
}

/// The traffic: what each caller sends, in order; the status it got.
async fn traffic(port: u16) -> Vec<(String, u16)> {
    let base = format!("http://127.0.0.1:{port}");
    let dashboard = [AS_DASHBOARD, JSON];
    let writer = [("authorization", "Bearer writer-token"), JSON];
    let prober = [("authorization", "Bearer prober-token")];
    let mut seen = Vec::new();
    for n in 0..8 {
        let reply = get(&format!("{base}/reports/r{n}"), &[AS_DASHBOARD]).await;
        seen.push((format!("dashboard GET /reports/r{n}"), reply.status.as_u16()));
    }
    for n in 0..4 {
        let query = format!("query Q{n} {{ machines {{ name annotations {{ startAt }} }} }}");
        let reply = post(&format!("{base}/graphql"), &dashboard, gql(&query, serde_json::json!({}))).await;
        seen.push((format!("dashboard query {n}"), reply.status.as_u16()));
    }
    // A batch of three: three units.
    let batch = serde_json::json!([{ "query": "{ a { x } }" }, { "query": "{ b { y } }" }, { "query": "{ c { z } }" }]);
    let reply = post(&format!("{base}/graphql"), &dashboard, batch.to_string()).await;
    seen.push(("dashboard batch".into(), reply.status.as_u16()));
    // Mutations the writer's scopes do not allow yet (shadowed by the server's mode).
    for n in 0..2 {
        let mutation = gql(&format!("mutation M{n} {{ touch {{ id }} }}"), serde_json::json!({}));
        let reply = post(&format!("{base}/graphql"), &writer, mutation).await;
        seen.push((format!("writer mutation {n}"), reply.status.as_u16()));
    }
    // A probe for a scope the prober does not hold, refused for real.
    let reply = get(&format!("{base}/erp/orders"), &prober).await;
    seen.push(("prober GET /erp/orders".into(), reply.status.as_u16()));
    let reply = get(&format!("{base}/reports/p"), &prober).await;
    seen.push(("prober GET /reports/p".into(), reply.status.as_u16()));
    seen
}

/// Runs `toml` as a binary with JSON logs, sends the traffic; returns what
/// callers got and the log.
async fn record(dir: &KeyDir, name: &str, toml: &str) -> (Vec<(String, u16)>, String) {
    std::fs::write(dir.path(name), toml).unwrap();
    let (port, admin, toml) = on_free_ports(toml);
    let path = dir.path(&format!("running-{name}"));
    std::fs::write(&path, toml).unwrap();
    let child = spawn(&path, &[("MMGATE_SERVER__LOG_FORMAT", "json")], admin);
    let seen = traffic(port).await;
    let ids = seen.len();
    eventually("every access line is written", Duration::from_secs(3), || async {
        (child.logs().matches("\"target\":\"mmgate::access\"").count() >= ids).then_some(())
    })
    .await;
    let (code, logs) = terminate(child);
    assert_eq!(code, 0, "{logs}");
    (seen, logs)
}

fn scopes_of(toml: &str, client: &str) -> Vec<String> {
    let doc: toml_edit::DocumentMut = toml.parse().unwrap();
    doc["clients"][client]["scopes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_config_enforced_and_replayed_refuses_nothing_and_grants_nothing_unused() {
    let fake = FakeMm::start(Duration::ZERO, 1000).await;
    let keys = KeyDir::new();
    let shadow = with_lines(&config(&fake.url(), &keys, &clients()), "server", "mode = \"shadow\"");
    // The dashboard holds `erp` it never uses.
    let shadow =
        shadow.replacen("[clients.dashboard]\ntoken_sha256", "[clients.dashboard]\n# the dashboard\ntoken_sha256", 1);
    let shadow = shadow.replacen(
        "scopes = [\"reporting\"]\n\n[clients.erp-sync]",
        "scopes = [\"reporting\", \"erp\"]\n\n[clients.erp-sync]",
        1,
    );
    let (first, logs) = record(&keys, "shadow.toml", &shadow).await;
    assert!(first.iter().all(|(what, status)| *status == 200 || what.starts_with("prober GET /erp")), "{first:?}");
    assert!(logs.contains("\"would_refuse\":\"scope_denied\""), "the writer's mutations were shadowed");

    // The logs, gzipped, plus a file of garbage.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(logs.as_bytes()).unwrap();
    std::fs::write(keys.path("access.log.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(keys.path("junk.log"), "not json\n{\"target\":\"mmgate::access\"}\n").unwrap();

    let (code, suggested, stderr) = run(mmgate()
        .args(["suggest", "--config"])
        .arg(keys.path("shadow.toml"))
        .arg("--log")
        .arg(keys.path("access.log.gz"))
        .arg(keys.path("junk.log")));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("skipped 2 unreadable lines"), "{stderr}");
    assert!(suggested.contains("# the dashboard"), "the operator's comments are kept");
    assert_eq!(scopes_of(&suggested, "dashboard"), ["reporting"], "erp was never used");
    assert_eq!(scopes_of(&suggested, "writer"), ["reporting", "write"], "what its shadowed mutations needed");
    assert_eq!(scopes_of(&suggested, "prober"), ["reporting"], "a refused probe grants nothing");
    assert!(suggested.contains("clients.dashboard: scopes never used: [\"erp\"]"), "{suggested}");
    assert!(suggested.contains("clients.idle: never seen"), "{suggested}");
    let refused_now = suggested.split("as it is would refuse of this traffic:").nth(1).unwrap_or_default();
    assert!(refused_now.starts_with("\n#   client writer on /graphql: 2 x scope_denied\n"), "{suggested}");
    let doc: toml_edit::DocumentMut = suggested.parse().unwrap();
    let routes = doc["routes"].as_array_of_tables().unwrap();
    let graphql = routes.iter().find(|r| r["path"].as_str() == Some("/graphql")).unwrap();
    assert_eq!((graphql["max_depth"].as_integer(), graphql["max_nodes"].as_integer()), (Some(2), Some(2)));
    assert!(doc["clients"]["dashboard"]["limit"]["per_minute"].as_integer().unwrap() >= 2 * 15, "{suggested}");

    // Enforced, the same traffic passes exactly as it did in shadow mode.
    let enforced = suggested.replace("mode = \"shadow\"", "mode = \"enforce\"");
    let (code, stdout, stderr) = run(mmgate().args(["check", "--skip-keys", "--config"]).arg({
        std::fs::write(keys.path("enforced.toml"), &enforced).unwrap();
        keys.path("enforced.toml")
    }));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (second, logs) = record(&keys, "enforced.toml", &enforced).await;
    assert_eq!(second, first, "replayed under the suggested config");
    assert!(!logs.contains("would_refuse"), "nothing left to shadow");
}

#[test]
fn suggest_reads_standard_input_and_prints_snippets_without_a_config() {
    let line = r#"{"timestamp":"2026-11-30T12:00:00.5Z","level":"INFO","client":"dash","route":"/graphql","by":"upstream","scope":"reporting","operations":2,"depth":3,"nodes":4,"duration_us":10,"target":"mmgate::access"}"#;
    let mut child = mmgate()
        .args(["suggest", "--log", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{line}\n{line}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let doc: toml_edit::DocumentMut = text.parse().unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"));
    assert_eq!(doc["clients"]["dash"]["scopes"].as_array().unwrap().get(0).and_then(|v| v.as_str()), Some("reporting"));
    assert_eq!(doc["clients"]["dash"]["limit"]["per_minute"].as_integer(), Some(8), "4 units, twice");
    let route = &doc["routes"].as_array_of_tables().unwrap().get(0).unwrap().clone();
    assert_eq!((route["max_depth"].as_integer(), route["max_nodes"].as_integer()), (Some(3), Some(4)));
}

#[test]
fn suggest_without_a_usable_line_exits_1_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let text_log = dir.path().join("text.log");
    std::fs::write(&text_log, "2026-11-30T12:00:00Z  INFO mmgate::access: request_id=\"x\" status=200\n").unwrap();
    let (code, stdout, stderr) = run(mmgate().args(["suggest", "--log"]).arg(&text_log));
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("log_format = \"json\""), "{stderr}");
    let (code, _, stderr) = run(mmgate().args(["suggest", "--log", "/nonexistent/access.log"]));
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/access.log"), "{stderr}");
}
