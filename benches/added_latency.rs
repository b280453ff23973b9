//! Latency mmgate adds over calling the upstream directly, at a fixed,
//! moderate rate (open loop: requests are sent on schedule whether or not
//! earlier ones have answered). Driven by `bench/load.sh`:
//!
//! `cargo bench --bench added_latency -- DIRECT_URL PROXIED_URL KEY RATE SECONDS`
//!
//! Direct and proxied requests alternate, so both see the same machine noise.
//! With `PROBE_BODY=FILE`, every request is a POST of that file's bytes as
//! JSON (a GraphQL request) instead of a GET.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [direct, proxied, key, rate, seconds] = args.as_slice() else {
        eprintln!("usage: added_latency DIRECT_URL PROXIED_URL KEY RATE SECONDS");
        return;
    };
    let rate: u32 = rate.parse().unwrap();
    let seconds: u64 = seconds.parse().unwrap();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let auth = format!("Bearer {key}");
    let body = std::env::var_os("PROBE_BODY").map(|file| Bytes::from(std::fs::read(file).unwrap()));
    let request = |url: &str| {
        let builder = match &body {
            Some(_) => http::Request::post(url).header("content-type", "application/json"),
            None => http::Request::get(url),
        };
        (builder, Full::new(body.clone().unwrap_or_default()))
    };

    // Warm both paths' connection pools.
    for _ in 0..50 {
        for (url, with_key) in [(direct, true), (proxied, false)] {
            let (mut r, payload) = request(url);
            if with_key {
                r = r.header("authorization", &auth);
            }
            let resp = client.request(r.body(payload).unwrap()).await.unwrap();
            let _ = resp.into_body().collect().await;
        }
    }

    let total = rate as u64 * seconds;
    let interval = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + interval * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let direct_turn = i % 2 == 0;
        let (mut builder, payload) = request(if direct_turn { direct } else { proxied });
        if direct_turn {
            builder = builder.header("authorization", &auth);
        }
        let request = builder.body(payload).unwrap();
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Timed from the actual send: tokio's timer has millisecond
            // granularity, and its lateness is not the proxy's latency.
            let sent = Instant::now();
            let resp = client.request(request).await.unwrap();
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            (direct_turn, ok, sent.elapsed())
        }));
    }
    let (mut d, mut p) = (Vec::new(), Vec::new());
    let mut failures = 0;
    for t in tasks {
        let (direct_turn, ok, latency) = t.await.unwrap();
        failures += usize::from(!ok);
        if direct_turn {
            d.push(latency)
        } else {
            p.push(latency)
        }
    }
    d.sort();
    p.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let (d50, d99, p50, p99) = (percentile(&d, 0.5), percentile(&d, 0.99), percentile(&p, 0.5), percentile(&p, 0.99));
    println!(
        "added_latency rate={rate}/s samples={} non_2xx={failures} direct_p50_us={:.0} direct_p99_us={:.0} proxied_p50_us={:.0} proxied_p99_us={:.0} added_p50_us={:.0} added_p99_us={:.0}",
        d.len() + p.len(),
        us(d50),
        us(d99),
        us(p50),
        us(p99),
        us(p50) - us(d50),
        us(p99) - us(d99)
    );
}
