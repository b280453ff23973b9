//! Every setting takes effect on reload (issue 11): head limits from the
//! next connection, the grace period at the next shutdown, a rejected key
//! stays rejected while its value is unchanged, and the addresses really
//! listened on are what the running config reports.

use std::time::{Duration, Instant};

use mmgate::config::{ConfigOrigin, ListenAddr};

use crate::support::*;

struct OnDisk {
    gate: Mmgate,
    upstream: Upstream,
    keys: KeyDir,
    path: std::path::PathBuf,
    toml: String,
}

async fn on_disk(extra_server: &str) -> OnDisk {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml = with_lines(&config(&upstream.url(), &keys, ""), "server", extra_server);
    let path = keys.path("mmgate.toml");
    std::fs::write(&path, &toml).unwrap();
    let gate = Mmgate::start(&toml).await;
    OnDisk { gate, upstream, keys, path, toml }
}

impl OnDisk {
    fn reload_with(&self, toml: &str) {
        std::fs::write(&self.path, toml).unwrap();
        self.gate.gate.reload(&ConfigOrigin::File(self.path.clone())).unwrap();
    }
}

#[tokio::test]
async fn head_limits_apply_from_the_next_connection() {
    let d = on_disk("").await;
    let header = "v".repeat(6 * 1024);
    let url = d.gate.url("/reports/a");
    assert_eq!(get(&url, &[AS_DASHBOARD, ("x-big", &header)]).await.status, 200);
    d.reload_with(&d.toml.replace("max_header_bytes = \"8KiB\"", "max_header_bytes = \"4KiB\""));
    get(&url, &[AS_DASHBOARD, ("x-big", &header)]).await.assert_error(431, "headers_too_large");
    assert_eq!(d.upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_grace_period_is_read_at_shutdown() {
    let mut d = on_disk("").await;
    // 2 s at start; the upstream's slow answer takes 1 s (upstream.timeout).
    d.reload_with(&d.toml.replace("shutdown_grace = \"2s\"", "shutdown_grace = \"200ms\""));
    let url = d.gate.url("/reports/slow");
    let slow = tokio::spawn(async move { send(http::Method::GET, &url, &[AS_DASHBOARD], bytes::Bytes::new()).await });
    while d.upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    d.gate.begin_stop();
    d.gate.stopped().await;
    assert!(started.elapsed() < Duration::from_millis(800), "waited {:?}: the old grace", started.elapsed());
    slow.abort();
}

#[tokio::test]
async fn a_rejected_key_stays_rejected_across_a_reload_of_the_same_key() {
    let d = on_disk("").await;
    d.upstream.accept_only("another-key");
    for _ in 0..3 {
        assert_eq!(get(&d.gate.url("/reports/auth/x"), &[AS_DASHBOARD]).await.status, 401);
    }
    let state = |ready: serde_json::Value| {
        ready["keys"].as_array().unwrap().iter().find(|k| k["name"] == "reporting").unwrap()["state"].clone()
    };
    let readyz = format!("http://{}/readyz", d.gate.admin);
    assert_eq!(state(get(&readyz, &[]).await.json()), "rejected");
    d.reload_with(&d.toml);
    assert_eq!(state(get(&readyz, &[]).await.json()), "rejected", "a reload is no evidence the key works");
    // A new value is a new key: not refused yet.
    std::fs::write(d.keys.path("reporting.key"), "another-key").unwrap();
    d.reload_with(&d.toml);
    assert_eq!(state(get(&readyz, &[]).await.json()), "loaded");
}

#[tokio::test]
async fn changed_addresses_are_kept_and_reported_as_running() {
    let d = on_disk("").await;
    let before = d.gate.gate.runtime().settings().server().listen.clone();
    let moved = d.toml.replace("\nlisten = \"127.0.0.1:0\"", &format!("\nlisten = \"127.0.0.1:{}\"", free_port()));
    d.reload_with(&moved.replace("max_body = \"64KiB\"", "max_body = \"32KiB\""));
    let runtime = d.gate.gate.runtime();
    assert_eq!(runtime.settings().server().listen, before);
    assert!(matches!(before, ListenAddr::Tcp(_)));
    // The rest of the new config is in force.
    assert_eq!(runtime.settings().server().max_body, 32 * 1024);
    assert_eq!(get(&d.gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
}
