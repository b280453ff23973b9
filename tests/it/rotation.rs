//! Key rotation without restarts: file keys are re-read on change (in-place
//! writes, renames, the Kubernetes `..data` symlink swap) and on an upstream
//! 401; a failed read keeps the previous key; a request in flight finishes
//! with the key it started with.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mmgate::Fingerprint;

use crate::support::*;

const NEW_KEY: &str = "mm-reporting-key-NEW-2222222222";

fn auth_of(r: &Recorded) -> &str {
    r.header("authorization").unwrap()
}

use crate::support::upstream::Recorded;

/// Writes `text` to `path` the way secret tools do: a temp file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn readyz(gate: &Mmgate) -> serde_json::Value {
    get(&format!("http://{}/readyz", gate.admin), &[]).await.json()
}

/// Polls `/readyz` until `key` is in `state` (2 s at most); returns the last answer.
async fn wait_for_key_state(gate: &Mmgate, key: &str, state: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let ready = readyz(gate).await;
        if ready["keys"].as_array().unwrap().iter().any(|k| k["name"] == key && k["state"] == state) {
            return ready;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "key {key} never became {state}: {ready}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn fingerprint_in(ready: &serde_json::Value, key: &str) -> String {
    ready["keys"].as_array().unwrap().iter().find(|k| k["name"] == key).unwrap()["fingerprint"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_drops_no_request_and_switches_within_2s() {
    let (gate, upstream, keys) = Mmgate::with_upstream("").await;
    let url = gate.url("/reports/production");
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (url, stop) = (url.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                // Distinct reads: identical ones in flight at once would share one upstream call.
                let reply = get(&format!("{url}?w={worker}&n={}", sent.len()), &[AS_DASHBOARD]).await;
                sent.push((started, reply.status.as_u16(), reply.headers["x-request-id"].to_str().unwrap().to_owned()));
            }
            sent
        }));
    }
    eventually("load is running", Duration::from_secs(3), || async { (upstream.requests().len() >= 20).then_some(()) })
        .await;
    let changed_at = Instant::now();
    std::fs::write(keys.path("reporting.key"), format!("{NEW_KEY}\n")).unwrap();
    let with_new_key = |r: &Recorded| auth_of(r) == format!("Bearer {NEW_KEY}");
    eventually("the new key never reached the upstream", Duration::from_secs(3), || async {
        upstream.requests().iter().any(with_new_key).then_some(())
    })
    .await;
    // Load goes on a little after the switch, so that late old-key use would show.
    let switched = upstream.requests().len();
    eventually("load after the switch", Duration::from_secs(3), || async {
        (upstream.requests().len() >= switched + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for w in workers {
        sent.extend(w.await.unwrap());
    }

    assert!(sent.len() > 50, "only {} requests", sent.len());
    assert!(sent.iter().all(|(_, status, _)| *status == 200), "a request failed during rotation");
    let seen = upstream.requests();
    let by_id = |id: &str| seen.iter().find(|r| r.header("x-request-id") == Some(id)).unwrap();
    let first_new = seen.iter().filter(|r| auth_of(r) == format!("Bearer {NEW_KEY}")).map(|r| r.at).min().unwrap();
    assert!(
        first_new.duration_since(changed_at) < Duration::from_secs(2),
        "new key used after {:?}",
        first_new - changed_at
    );
    for (started, _, id) in &sent {
        let auth = auth_of(by_id(id));
        if *started > first_new {
            assert_eq!(auth, format!("Bearer {NEW_KEY}"), "old key used after the switch");
        }
        if *started < changed_at {
            assert_eq!(auth, format!("Bearer {REPORTING_KEY}"));
        }
    }
    assert_eq!(fingerprint_in(&readyz(&gate).await, "reporting"), Fingerprint::of(NEW_KEY).to_string());
}

#[tokio::test]
async fn the_kubernetes_symlink_swap_is_seen() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    // A Secret volume: key -> ..data/key, ..data -> ..2026_11_27_1
    let mount = keys.path("secret");
    std::fs::create_dir_all(mount.join("..2026_11_27_1")).unwrap();
    std::fs::write(mount.join("..2026_11_27_1/key"), REPORTING_KEY).unwrap();
    std::os::unix::fs::symlink("..2026_11_27_1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/key", mount.join("key")).unwrap();
    let toml = config(&upstream.url(), &keys, "")
        .replace(&keys.path("reporting.key").display().to_string(), &mount.join("key").display().to_string());
    let toml = with_lines(&toml, "server", "key_poll_interval = \"1h\"");
    let gate = Mmgate::start(&toml).await;
    assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);

    // The kubelet writes a new timestamped directory and renames ..data over.
    std::fs::create_dir_all(mount.join("..2026_11_27_2")).unwrap();
    std::fs::write(mount.join("..2026_11_27_2/key"), NEW_KEY).unwrap();
    std::os::unix::fs::symlink("..2026_11_27_2", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(mount.join("..2026_11_27_1")).unwrap();

    let started = Instant::now();
    loop {
        assert_eq!(get(&gate.url("/reports/b"), &[AS_DASHBOARD]).await.status, 200);
        if auth_of(upstream.requests().last().unwrap()) == format!("Bearer {NEW_KEY}") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the swap was not seen within 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_empty_or_missing_file_keeps_the_previous_key() {
    let (gate, upstream, keys) = Mmgate::with_upstream("").await;
    let path = keys.path("reporting.key");
    let old = Fingerprint::of(REPORTING_KEY).to_string();
    for breakage in ["empty", "missing"] {
        if breakage == "empty" {
            replace_file(&path, "  \n");
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        // The watcher read the bad file: the key is stale, still in use, and ready.
        let ready = wait_for_key_state(&gate, "reporting", "stale").await;
        assert_eq!(ready["ready"], true, "{breakage}");
        let metrics = get(&format!("http://{}/metrics", gate.admin), &[]).await.text();
        for (state, value) in [("stale", 1), ("loaded", 0), ("rejected", 0), ("missing", 0)] {
            let series = format!("mmgate_key_state{{key=\"reporting\",state=\"{state}\"}} {value}");
            assert!(metrics.contains(&series), "{series} not in\n{metrics}");
        }
        assert_eq!(fingerprint_in(&ready, "reporting"), old);
        assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
        assert_eq!(auth_of(upstream.requests().last().unwrap()), format!("Bearer {REPORTING_KEY}"), "{breakage}");
        replace_file(&path, REPORTING_KEY);
        wait_for_key_state(&gate, "reporting", "loaded").await;
    }
    replace_file(&path, NEW_KEY);
    let started = Instant::now();
    while fingerprint_in(&readyz(&gate).await, "reporting") != Fingerprint::of(NEW_KEY).to_string() {
        assert!(started.elapsed() < Duration::from_secs(2), "the new key was not read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(&gate.url("/reports/a"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(auth_of(upstream.requests().last().unwrap()), format!("Bearer {NEW_KEY}"));
}

#[tokio::test]
async fn an_upstream_401_rereads_the_key_at_once_and_repeated_401s_mark_it_rejected() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    // No file events and no polling to speak of: only the 401 can trigger a re-read.
    let toml = with_lines(
        &config(&upstream.url(), &keys, ""),
        "server",
        "watch_key_files = false\nkey_poll_interval = \"1h\"",
    );
    let gate = Mmgate::start(&toml).await;
    upstream.accept_only(NEW_KEY);
    replace_file(&keys.path("reporting.key"), NEW_KEY);

    let reply = get(&gate.url("/reports/auth/x"), &[AS_DASHBOARD]).await;
    assert_eq!(reply.status, 401, "the upstream's 401 passes through");
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if get(&gate.url("/reports/auth/x"), &[AS_DASHBOARD]).await.status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "the 401 did not trigger a re-read");
    }
    assert_eq!(auth_of(upstream.requests().last().unwrap()), format!("Bearer {NEW_KEY}"));

    // The key is revoked upstream: three 401s in a row mark it rejected.
    upstream.accept_only("something-else");
    for _ in 0..3 {
        assert_eq!(get(&gate.url("/reports/auth/x"), &[AS_DASHBOARD]).await.status, 401);
    }
    let ready = get(&format!("http://{}/readyz", gate.admin), &[]).await;
    // A rejected key is reported, but does not take the pod out of service by default.
    assert_eq!(ready.status, 200);
    let key = ready.json()["keys"].as_array().unwrap().iter().find(|k| k["name"] == "reporting").cloned().unwrap();
    assert_eq!(key["state"], "rejected");
    // Requests keep being forwarded, so a key that comes back is seen at once.
    upstream.accept_only(NEW_KEY);
    assert_eq!(get(&gate.url("/reports/auth/x"), &[AS_DASHBOARD]).await.status, 200);
    wait_for_key_state(&gate, "reporting", "loaded").await;
}

#[tokio::test]
async fn unready_on_rejected_key_makes_a_rejected_key_fail_readiness() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml = with_lines(&config(&upstream.url(), &keys, ""), "server", "unready_on_rejected_key = true");
    let gate = Mmgate::start(&toml).await;
    assert_eq!(get(&format!("http://{}/readyz", gate.admin), &[]).await.status, 200);
    upstream.accept_only("something-else");
    for _ in 0..3 {
        assert_eq!(get(&gate.url("/reports/auth/x"), &[AS_DASHBOARD]).await.status, 401);
    }
    let ready = get(&format!("http://{}/readyz", gate.admin), &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.json()["ready"], false);
}

#[tokio::test]
async fn a_request_in_flight_keeps_the_key_it_started_with() {
    let (gate, upstream, keys) = Mmgate::with_upstream("").await;
    let url = gate.url("/reports/production");
    // A large body sent slowly keeps the request in flight across the rotation.
    let (body_tx, body) = body_channel();
    let slow = tokio::spawn(async move { send_streaming(&url, &[AS_DASHBOARD], body).await });
    body_tx.send(bytes::Bytes::from_static(b"part one,")).await.unwrap();
    // The request is in flight (its key chosen) before the rotation...
    metric_reaches(gate.admin, "mmgate_requests_in_flight", 1.0).await;
    replace_file(&keys.path("reporting.key"), NEW_KEY);
    // ...which is seen before the body ends.
    let new = Fingerprint::of(NEW_KEY).to_string();
    eventually("the new key was not read", Duration::from_secs(3), || async {
        (fingerprint_in(&readyz(&gate).await, "reporting") == new).then_some(())
    })
    .await;
    body_tx.send(bytes::Bytes::from_static(b"part two")).await.unwrap();
    drop(body_tx);
    assert_eq!(slow.await.unwrap().status, 200);
    let first = upstream.requests().into_iter().find(|r| r.body.starts_with(b"part one")).unwrap();
    assert_eq!(auth_of(&first), format!("Bearer {REPORTING_KEY}"));
    assert_eq!(&first.body[..], b"part one,part two");
    assert_eq!(get(&gate.url("/reports/after"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(auth_of(upstream.requests().last().unwrap()), format!("Bearer {NEW_KEY}"));
}
