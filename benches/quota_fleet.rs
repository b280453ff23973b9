//! The dashboard fleet: how far one company's MachineMetrics quota goes.
//!
//! 30 dashboards each poll the same 5 GraphQL queries every 3 s (staggered),
//! a demand of 3000 operations a minute, 3x what MachineMetrics allows a
//! company (1000 a minute). Against the fake MachineMetrics of
//! `benches/support/fake_mm.rs` (sliding window, 60 ms latency), three ways:
//!
//! - `plain`: every request forwarded, as a plain reverse proxy does
//!   (nginx or Envoy without caching); measured by calling the fake directly;
//! - `mmgate`: mmgate's embedded defaults (identical reads in flight shared,
//!   a 900/min budget refusing at once);
//! - `mmgate+cache`: the same with `cache = { ttl = "10s" }` on the route
//!   and `max_wait = "2s"` on the budget.
//!
//! `cargo bench --bench quota_fleet -- [SECONDS]` (default 60) prints, for
//! each, upstream calls and 429s, caller-visible errors and caller latency.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_mm.rs"]
mod fake_mm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_mm::FakeMm;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mmgate::config::Settings;
use mmgate::{Gate, Runtime, Server};

const DASHBOARDS: usize = 30;
const EVERY: Duration = Duration::from_secs(3);
const QUERIES: [&str; 5] = [
    "{ machines { name } }",
    "{ machines { id name } }",
    "{ machines { name currentStates { label } } }",
    "{ activities { id startAt } }",
    "{ machines { name annotations { startAt } } }",
];
const KEY: &str = "fleet-bench-key";

/// What one scenario's callers saw, and what the upstream saw.
struct Outcome {
    requests: usize,
    /// Answers other than 200 without errors, by status (1: GraphQL errors).
    errors: std::collections::BTreeMap<u16, usize>,
    latencies: Vec<Duration>,
    upstream_calls: u64,
    upstream_429: u64,
}

fn config(upstream: &str, key_file: &std::path::Path, saving: bool) -> String {
    let (cache, wait) = if saving { ("cache = { ttl = \"10s\" }", ", max_wait = \"2s\"") } else { ("", "") };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[upstream]
url = "{upstream}"
[keys.reporting]
file = "{key}"
scopes = ["reporting"]
budget = "company"
[budgets.company]
limit = {{ per_minute = 900, burst = 50{wait} }}
[[routes]]
path = "/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
{cache}
[clients.dashboards]
anonymous = true
scopes = ["reporting"]
"#,
        key = key_file.display()
    )
}

/// Each answer's status (1: a 200 with GraphQL errors, 0: no answer) and latency.
async fn run_fleet(url: String, authorization: Option<&'static str>, seconds: u64) -> Vec<(u16, Duration)> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut dashboards = Vec::new();
    for d in 0..DASHBOARDS {
        let (client, url) = (client.clone(), url.clone());
        dashboards.push(tokio::spawn(async move {
            tokio::time::sleep(EVERY * d as u32 / DASHBOARDS as u32).await;
            let mut seen = Vec::new();
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                if Instant::now() >= until {
                    break;
                }
                let panels = QUERIES.iter().map(|query| {
                    let body = serde_json::json!({ "query": query }).to_string();
                    let mut request = http::Request::post(url.as_str()).header("content-type", "application/json");
                    if let Some(auth) = authorization {
                        request = request.header("authorization", auth);
                    }
                    let request = request.body(Full::new(Bytes::from(body))).unwrap();
                    let client = client.clone();
                    async move {
                        let sent = Instant::now();
                        let Ok(response) = client.request(request).await else { return (0, sent.elapsed()) };
                        let status = response.status().as_u16();
                        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        // A 200 carrying GraphQL errors is a failure too.
                        let errors = body.windows(9).any(|w| w == b"\"errors\":");
                        (if status == 200 && errors { 1 } else { status }, sent.elapsed())
                    }
                });
                seen.extend(futures_util::future::join_all(panels).await);
            }
            seen
        }));
    }
    let mut seen = Vec::new();
    for d in dashboards {
        seen.extend(d.await.unwrap());
    }
    seen
}

async fn scenario(name: &str, seconds: u64, key_file: &std::path::Path) -> Outcome {
    let fake = FakeMm::start(Duration::from_millis(60), fake_mm::OPERATIONS_PER_MINUTE).await;
    let (url, authorization, stop) = match name {
        "plain" => (format!("{}/graphql", fake.url()), Some("Bearer fleet-bench-key"), None),
        _ => {
            let settings = Settings::from_toml(&config(&fake.url(), key_file, name == "mmgate+cache")).unwrap();
            let gate = Gate::new(Runtime::load(settings).unwrap());
            let server = Server::bind(Arc::clone(&gate)).await.unwrap();
            let url = format!("http://{}/graphql", server.proxy_addr().unwrap());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(server.run(async {
                let _ = stopped.await;
            }));
            (url, None, Some(stop))
        }
    };
    let seen = run_fleet(url, authorization, seconds).await;
    drop(stop);
    let mut errors = std::collections::BTreeMap::new();
    for (status, _) in seen.iter().filter(|(s, _)| *s != 200) {
        *errors.entry(*status).or_default() += 1;
    }
    let latencies = seen.iter().map(|(_, l)| *l).collect();
    Outcome { requests: seen.len(), errors, latencies, upstream_calls: fake.calls(), upstream_429: fake.throttled() }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().skip(1).find(|a| a != "--bench").map_or(60, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("mmgate-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("reporting.key");
    std::fs::write(&key_file, KEY).unwrap();

    let demand = DASHBOARDS * QUERIES.len() * 60 / EVERY.as_secs() as usize;
    println!(
        "dashboard fleet: {DASHBOARDS} dashboards x {} queries every {} s = {demand} operations/min \
         against {} allowed/min, {seconds} s per scenario",
        QUERIES.len(),
        EVERY.as_secs(),
        fake_mm::OPERATIONS_PER_MINUTE
    );
    println!(
        "{:<14} {:>9} {:>15} {:>14} {:>14} {:>9} {:>9}",
        "scenario", "requests", "upstream calls", "upstream 429s", "caller errors", "p50", "p95"
    );
    for name in ["plain", "mmgate", "mmgate+cache"] {
        let mut o = scenario(name, seconds, &key_file).await;
        o.latencies.sort();
        let errors: usize = o.errors.values().sum();
        let by_status: Vec<String> = o.errors.iter().map(|(s, n)| format!("{n}x{s}")).collect();
        println!(
            "{name:<14} {:>9} {:>15} {:>14} {:>14} {:>7.0}ms {:>7.0}ms  {}",
            o.requests,
            o.upstream_calls,
            o.upstream_429,
            errors,
            percentile(&o.latencies, 0.5).as_secs_f64() * 1000.0,
            percentile(&o.latencies, 0.95).as_secs_f64() * 1000.0,
            by_status.join(" "),
        );
    }
    let bound = QUERIES.len() as u64 * (seconds / 10 + 1);
    println!("target with cache: zero 429s, zero caller errors, upstream calls <= {bound} (5 queries x (duration / ttl + 1))");
    let _ = std::fs::remove_dir_all(&dir);
}
