//! Limits shared by replicas through a real Redis: together they never
//! exceed a limit; without Redis they fail open (or closed, if configured)
//! and they reconnect by themselves.

use std::time::{Duration, Instant};

use crate::cli::{spawn, terminate};
use crate::support::redis::RedisServer;
use crate::support::*;

fn shared_config(upstream: &Upstream, keys: &KeyDir, redis_url: &str, extra_limits: &str) -> String {
    let toml = config(&upstream.url(), keys, &format!("\n[limits]\nredis = \"{redis_url}\"\n{extra_limits}\n"));
    with_lines(&toml, "keys.reporting", "limit = { per_minute = 60, burst = 3 }")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mmgate_processes_never_exceed_the_shared_limit_together() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml = shared_config(&upstream, &keys, &redis.url(), "");
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let (port, admin, own) = on_free_ports(&toml);
        let path = keys.path(&format!("{name}.toml"));
        std::fs::write(&path, own).unwrap();
        replicas.push((port, admin, spawn(&path, &[], admin)));
    }
    // Both connect to Redis in the background: wait until both have.
    for (_, admin, _) in &replicas {
        metric_reaches(([127, 0, 0, 1], *admin).into(), "mmgate_shared_limiter_connected", 1.0).await;
    }

    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..20 {
        let url = format!("http://127.0.0.1:{}/reports/x?n={i}", replicas[i % 2].0);
        calls.push(tokio::spawn(async move { get(&url, &[AS_DASHBOARD]).await }));
    }
    let mut ok = 0;
    let mut across = 0;
    for call in calls {
        let reply = call.await.unwrap();
        if reply.status == 200 {
            ok += 1;
        } else {
            let message = reply.assert_error(429, "rate_limited");
            across += usize::from(message.contains("across replicas"));
        }
    }
    let elapsed = started.elapsed().as_secs();
    // Burst 3, then one a second: each replica alone would allow 3 as well.
    assert!(ok >= 3 && ok as u64 <= 3 + elapsed + 1, "{ok} admitted in {elapsed} s");
    assert_eq!(upstream.requests().len(), ok);
    assert!(across > 0, "some refusals come from the shared limiter");
    assert!(!redis.keys("mmgate:*").is_empty());
    for (_, _, running) in replicas {
        let (code, _) = terminate(running);
        assert_eq!(code, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_and_comes_back_by_itself() {
    let mut redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml = shared_config(&upstream, &keys, &redis.url(), "redis_timeout = \"200ms\"");
    let (a, b) = (Mmgate::start(&toml).await, Mmgate::start(&toml).await);
    for gate in [&a, &b] {
        metric_reaches(gate.admin, "mmgate_shared_limiter_connected", 1.0).await;
    }

    for _ in 0..3 {
        assert_eq!(get(&a.url("/reports/x"), &[AS_DASHBOARD]).await.status, 200);
    }
    let message = get(&b.url("/reports/x"), &[AS_DASHBOARD]).await.assert_error(429, "rate_limited");
    assert!(message.contains("across replicas"), "{message}");

    redis.stop();
    // Fail open: B's own local limit (burst 3, refunded above) still applies.
    assert_eq!(get(&b.url("/reports/x"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(get(&b.url("/reports/x"), &[AS_DASHBOARD]).await.status, 200);

    redis.restart();
    let started = Instant::now();
    while redis.keys("mmgate:*").is_empty() {
        assert!(started.elapsed() < Duration::from_secs(15), "mmgate never wrote to the restarted Redis");
        let _ = get(&b.url("/reports/x"), &[AS_DASHBOARD]).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn fail_closed_refuses_with_503_when_redis_is_unreachable() {
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let port = free_port();
    let toml = shared_config(&upstream, &keys, &format!("redis://127.0.0.1:{port}"), "fail_open = false");
    let gate = Mmgate::start(&toml).await;
    let reply = get(&gate.url("/reports/x"), &[AS_DASHBOARD]).await;
    let message = reply.assert_error(503, "limiter_unavailable");
    assert!(!message.contains("127.0.0.1"), "{message}");
    upstream.assert_untouched();
    // Routes whose limits are all local-free (the erp key has none, erp-sync no client limit) pass.
    assert_eq!(post(&gate.url("/erp/jobdispatch/start"), &[AS_ERP], "{}").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadowed_limit_across_replicas_forwards_and_records_what_redis_would_refuse() {
    let redis = RedisServer::start();
    let upstream = Upstream::start().await;
    let keys = KeyDir::new();
    let toml = config(&upstream.url(), &keys, &format!("\n[limits]\nredis = \"{}\"\n", redis.url()));
    let toml = with_lines(&toml, "keys.reporting", "limit = { per_minute = 60, burst = 3, mode = \"shadow\" }");
    let (a, b) = (Mmgate::start(&toml).await, Mmgate::start(&toml).await);
    for gate in [&a, &b] {
        metric_reaches(gate.admin, "mmgate_shared_limiter_connected", 1.0).await;
    }
    for n in 0..3 {
        assert_eq!(get(&a.url(&format!("/reports/a{n}")), &[AS_DASHBOARD]).await.status, 200);
    }
    // B's own burst is untouched, but together they are over it: Redis would refuse.
    assert_eq!(get(&b.url("/reports/b"), &[AS_DASHBOARD]).await.status, 200);
    assert_eq!(upstream.requests().len(), 4);
    let series = r#"mmgate_shadow_refusals_total{route="/reports/*",client="dashboard",code="rate_limited"}"#;
    metric_reaches(b.admin, series, 1.0).await;
}
