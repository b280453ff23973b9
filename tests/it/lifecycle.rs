//! The binary's life: SIGHUP reloads (a bad config keeps the running one),
//! SIGTERM drains in-flight requests and exits 0, and through all of it the
//! trace-level logs never contain a key or a token.

use std::process::Command;
use std::time::{Duration, Instant};

use mmgate::Fingerprint;

use crate::cli::{spawn, terminate, Running};
use crate::support::*;

const NEW_KEY: &str = "mm-reporting-key-ROTATED-3333";

struct Binary {
    port: u16,
    admin: u16,
    path: std::path::PathBuf,
}

impl Binary {
    fn config(upstream: &Upstream, keys: &KeyDir, extra: &str) -> (Self, String) {
        let (port, admin, toml) = on_free_ports(&config(&upstream.url(), keys, extra));
        (Self { port, admin, path: keys.path("mmgate.toml") }, toml)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn admin(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }
}

fn signal(child: &Running, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_serving_through_a_bad_config_and_applies_a_good_one() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let (bin, good) = Binary::config(&upstream, &keys, "");
    std::fs::write(&bin.path, &good).unwrap();
    let child = spawn(&bin.path, &[("RUST_LOG", "trace")], bin.admin);

    assert_eq!(get(&bin.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
    get(&bin.url("/accounts/current"), &[AS_DASHBOARD]).await.assert_error(404, "no_route");

    // A bad config: logged, and the running config stays.
    std::fs::write(&bin.path, good.replace("key = \"erp\"", "key = \"no-such-key\"")).unwrap();
    signal(&child, "-HUP");
    let admin: std::net::SocketAddr = ([127, 0, 0, 1], bin.admin).into();
    metric_reaches(admin, r#"mmgate_config_reloads_total{result="failed"}"#, 1.0).await;
    assert_eq!(get(&bin.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200, "still serving");

    // A good config with a new route: applied.
    let route = "\n[[routes]]\npath = \"/accounts/*\"\nkey = \"reporting\"\nscope = \"reporting\"\n";
    std::fs::write(&bin.path, format!("{good}{route}")).unwrap();
    signal(&child, "-HUP");
    let started = Instant::now();
    while get(&bin.url("/accounts/current"), &[AS_DASHBOARD]).await.status != 200 {
        assert!(started.elapsed() < Duration::from_secs(3), "the new route never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // And a key rotation, to see fingerprints (never keys) in the logs.
    std::fs::write(keys.path("reporting.key"), NEW_KEY).unwrap();
    let started = Instant::now();
    loop {
        let ready = get(&bin.admin("/readyz"), &[]).await.json();
        let fp =
            ready["keys"].as_array().unwrap().iter().find(|k| k["name"] == "reporting").unwrap()["fingerprint"].clone();
        if fp == Fingerprint::of(NEW_KEY).to_string() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "rotation not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&bin.url("/reports/b"), &[AS_DASHBOARD]).await.status, 200);

    let (code, logs) = terminate(child);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("reload refused") && logs.contains("no-such-key"), "the bad reload is logged:\n{logs}");
    assert!(logs.contains(&bin.path.display().to_string()), "the log names the file");
    assert!(logs.contains("configuration reloaded"));
    assert!(
        logs.contains(&Fingerprint::of(REPORTING_KEY).to_string())
            && logs.contains(&Fingerprint::of(NEW_KEY).to_string())
    );
    for secret in [REPORTING_KEY, NEW_KEY, ERP_KEY, DASH_TOKEN, ERP_TOKEN] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let (bin, toml) = Binary::config(&upstream, &keys, "");
    let toml = toml
        .replace("timeout = \"1s\"", "timeout = \"10s\"")
        .replace("shutdown_grace = \"2s\"", "shutdown_grace = \"8s\"");
    std::fs::write(&bin.path, toml).unwrap();
    let child = spawn(&bin.path, &[("RUST_LOG", "debug")], bin.admin);

    let url = bin.url("/reports/slow");
    let slow = tokio::spawn(async move { get(&url, &[AS_DASHBOARD]).await });
    while upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&child, "-TERM");
    let readyz = bin.admin("/readyz");
    eventually("not ready while draining", Duration::from_secs(3), || async {
        (get(&readyz, &[]).await.status == 503).then_some(())
    })
    .await;
    eventually("new connections are refused", Duration::from_secs(3), || async {
        std::net::TcpStream::connect(("127.0.0.1", bin.port)).is_err().then_some(())
    })
    .await;

    let reply = slow.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completes: {}", reply.text());
    let (code, logs) = child.wait();
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("SIGTERM"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_reads_do_not_retrigger_themselves_and_other_files_are_ignored() {
    // Regression: reading a key is itself an inotify event (open, access,
    // close); reacting to it re-read the key about twenty times a second.
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let (bin, toml) = Binary::config(&upstream, &keys, "");
    std::fs::write(&bin.path, with_lines(&toml, "server", "key_poll_interval = \"1h\"")).unwrap();
    let child = spawn(&bin.path, &[("RUST_LOG", "mmgate=debug")], bin.admin);
    // Busy neighbours in the key directory (a log, say) cause no re-read...
    for i in 0..20 {
        std::fs::write(keys.path("neighbour.log"), format!("line {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...and a key change is one burst of re-reads, not a loop: once it is
    // seen (the new fingerprint), the count of re-reads stays small.
    std::fs::write(keys.path("reporting.key"), NEW_KEY).unwrap();
    let first = eventually("the key change was not seen", Duration::from_secs(3), || async {
        let seen = child.logs().matches("key file changed").count();
        (seen > 0).then_some(seen)
    })
    .await;
    assert!((1..=3).contains(&first), "{first} re-reads for one change:\n{}", child.logs());
    // A loop re-read some twenty times a second: absence needs time to show.
    std::thread::sleep(Duration::from_millis(300));
    let after = child.logs().matches("key file changed").count();
    assert_eq!(after, first, "re-reads went on:\n{}", child.logs());
    let (code, _) = terminate(child);
    assert_eq!(code, 0);
}
