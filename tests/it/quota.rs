//! Saving the company's quota (DESIGN.md): identical reads in flight share
//! one upstream call, answers are cached on routes that ask for it, and
//! what MachineMetrics would refuse is refused locally. Against the fake
//! MachineMetrics of `benches/support/fake_mm.rs`, which numbers every
//! answer (`serial`) and can hold answers until the test releases them.

use std::time::Duration;

use crate::support::*;

pub const QUERY: &str = "{ machines { name } }";

pub fn gql(query: &str, variables: serde_json::Value) -> String {
    serde_json::json!({ "query": query, "variables": variables }).to_string()
}

pub const AS_WRITER: (&str, &str) = ("authorization", "Bearer writer-token");
pub const AS_OUTSIDER: (&str, &str) = ("authorization", "Bearer outsider-token");

/// Clients and routes on top of the standard test config.
pub fn extra() -> String {
    format!(
        r#"
[clients.writer]
token_sha256 = "{writer}"
scopes = ["reporting", "write"]

[clients.outsider]
token_sha256 = "{outsider}"
scopes = ["erp"]

[[routes]]
path = "/cached/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
mutation_scope = "write"
cache = {{ ttl = "3s" }}

[[routes]]
path = "/creports/*"
key = "reporting"
scope = "reporting"
cache = {{ ttl = "3s" }}

[[routes]]
path = "/ro/*"
key = "reporting"
scope = "reporting"
read_only = true
"#,
        writer = sha("writer-token"),
        outsider = sha("outsider-token"),
    )
}

/// mmgate (standard config + `extra()` + `more`) in front of a fake MachineMetrics.
pub async fn start(more: &str, tweak: impl FnOnce(String) -> String) -> (Mmgate, FakeMm, KeyDir) {
    let fake = FakeMm::start(Duration::ZERO, 1000).await;
    let keys = KeyDir::new();
    let toml = tweak(config(&fake.url(), &keys, &format!("{}{more}", extra())));
    (Mmgate::start(&toml).await, fake, keys)
}

pub async fn metrics_of(gate: &Mmgate) -> String {
    get(&format!("http://{}/metrics", gate.admin), &[]).await.text()
}

/// Waits until the fake has received `calls` requests and `joined` callers
/// wait on reads in flight.
pub async fn until_in_flight(gate: &Mmgate, fake: &FakeMm, calls: u64, joined: f64) {
    eventually("upstream calls", Duration::from_secs(5), || async { (fake.calls() == calls).then_some(()) }).await;
    metric_reaches(gate.admin, "mmgate_coalesced_waiting", joined).await;
}

type Pending = tokio::task::JoinHandle<Reply>;

fn spawn_post(url: String, headers: &'static [(&'static str, &'static str)], body: String) -> Pending {
    tokio::spawn(async move { post(&url, headers, body).await })
}

const DASH_JSON: &[(&str, &str)] = &[AS_DASHBOARD, JSON];

#[tokio::test]
async fn twenty_identical_queries_in_flight_make_one_upstream_call_and_get_the_same_bytes() {
    let (gate, fake, _keys) = start("", |t| t).await;
    fake.hold();
    let pending: Vec<Pending> =
        (0..20).map(|_| spawn_post(gate.url("/graphql"), DASH_JSON, gql(QUERY, serde_json::json!({"n": 1})))).collect();
    until_in_flight(&gate, &fake, 1, 19.0).await;
    fake.release();
    let mut replies = Vec::new();
    for p in pending {
        replies.push(p.await.unwrap());
    }
    assert_eq!(fake.calls(), 1, "one upstream call for twenty callers");
    let first = &replies[0];
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["data"]["serial"], 1);
    let mut ids = std::collections::HashSet::new();
    for r in &replies {
        assert_eq!((r.status, &r.body), (first.status, &first.body), "byte-identical answers");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(!r.headers.contains_key("x-mmgate-cache"), "only cached routes say how they were served");
        ids.insert(r.headers["x-request-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 20, "each caller keeps its own request id");
    let text = metrics_of(&gate).await;
    let avoided = r#"mmgate_upstream_requests_avoided_total{route="/graphql",reason="coalesced"}"#;
    assert_eq!(metric(&text, avoided), Some(19.0));
    assert_eq!(metric(&text, "mmgate_coalesced_waiting"), Some(0.0));
}

#[tokio::test]
async fn the_same_question_asked_differently_is_still_shared() {
    let (gate, fake, _keys) = start("", |t| t).await;
    fake.hold();
    let a = r#"{"query":"{ machines(limit: 1, offset: 2) { name } }","variables":{"a":1,"b":[true,{"y":2,"x":1}]}}"#;
    let b = "{\"variables\":{\"b\":[true,{\"x\":1,\"y\":2}],\"a\":1},\n \"query\":\"# the same\\n{machines(limit:1,offset:2){name}}\"}";
    let first = spawn_post(gate.url("/graphql"), DASH_JSON, a.into());
    until_in_flight(&gate, &fake, 1, 0.0).await;
    let second = spawn_post(gate.url("/graphql"), DASH_JSON, b.into());
    until_in_flight(&gate, &fake, 1, 1.0).await;
    fake.release();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.status, &first.body), (second.status, &second.body));
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn reads_that_differ_and_writes_never_share() {
    let (gate, fake, _keys) = start("", |t| t).await;
    fake.hold();
    let graphql = gate.url("/graphql");
    let mut pending = vec![
        spawn_post(graphql.clone(), DASH_JSON, gql(QUERY, serde_json::json!({"x": 1}))),
        spawn_post(graphql.clone(), DASH_JSON, gql(QUERY, serde_json::json!({"x": 2}))),
        spawn_post(graphql.clone(), DASH_JSON, gql("query A { machines { name } }", serde_json::json!({"x": 1}))),
        spawn_post(graphql.clone(), &[AS_WRITER, JSON], gql("mutation { touch { id } }", serde_json::json!({}))),
        spawn_post(graphql.clone(), &[AS_WRITER, JSON], gql("mutation { touch { id } }", serde_json::json!({}))),
        // A POST on a route not marked read_only is not a read.
        spawn_post(gate.url("/reports/x"), &[AS_DASHBOARD], "same".into()),
        spawn_post(gate.url("/reports/x"), &[AS_DASHBOARD], "same".into()),
    ];
    for (path, headers) in [
        ("/reports/a?page=1", &[AS_DASHBOARD][..]),
        ("/reports/a?page=2", &[AS_DASHBOARD][..]),
        // Partial and conditional reads are each caller's own.
        ("/reports/a?page=1", &[AS_DASHBOARD, ("range", "bytes=0-9")][..]),
        ("/reports/a?page=1", &[AS_DASHBOARD, ("if-none-match", "\"v1\"")][..]),
        // A different representation is a different answer.
        ("/reports/a?page=1", &[AS_DASHBOARD, ("accept", "text/csv")][..]),
    ] {
        let (url, headers) = (gate.url(path), headers.to_vec());
        pending.push(tokio::spawn(async move { get(&url, &headers).await }));
    }
    until_in_flight(&gate, &fake, 12, 0.0).await;
    fake.release();
    for p in pending {
        assert_eq!(p.await.unwrap().status, 200);
    }
    assert_eq!(fake.calls(), 12, "every one went upstream");
}

#[tokio::test]
async fn posts_on_a_read_only_route_are_shared() {
    let (gate, fake, _keys) = start("", |t| t).await;
    fake.hold();
    let first = spawn_post(gate.url("/ro/report"), &[AS_DASHBOARD], r#"{"from":"2026-01-01"}"#.into());
    until_in_flight(&gate, &fake, 1, 0.0).await;
    let second = spawn_post(gate.url("/ro/report"), &[AS_DASHBOARD], r#"{"from":"2026-01-01"}"#.into());
    until_in_flight(&gate, &fake, 1, 1.0).await;
    fake.release();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((first.status.as_u16(), &first.body), (200, &second.body));
    assert_eq!(fake.received()[0].body, r#"{"from":"2026-01-01"}"#, "the body was forwarded whole");
}

#[tokio::test]
async fn the_callers_of_a_shared_read_survive_its_first_caller_leaving() {
    let (gate, fake, _keys) = start("", |t| t).await;
    fake.hold();
    let leader = spawn_post(gate.url("/graphql"), DASH_JSON, gql(QUERY, serde_json::json!({})));
    until_in_flight(&gate, &fake, 1, 0.0).await;
    let follower = spawn_post(gate.url("/graphql"), DASH_JSON, gql(QUERY, serde_json::json!({})));
    until_in_flight(&gate, &fake, 1, 1.0).await;
    leader.abort();
    metric_reaches(gate.admin, "mmgate_requests_in_flight", 1.0).await;
    fake.release();
    let reply = follower.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["data"]["serial"], 1, "the answer to the call the leader made");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn sharing_never_skips_identity_scope_or_the_callers_own_limit() {
    let limited = format!(
        "\n[clients.limited]\ntoken_sha256 = \"{}\"\nscopes = [\"reporting\"]\nlimit = {{ per_minute = 60, burst = 2 }}\n",
        sha("limited-token")
    );
    let (gate, fake, _keys) = start(&limited, |t| t).await;
    fake.hold();
    let body = gql(QUERY, serde_json::json!({}));
    let leader = spawn_post(gate.url("/graphql"), DASH_JSON, body.clone());
    until_in_flight(&gate, &fake, 1, 0.0).await;
    // Answered at once, while the read is still in flight.
    post(&gate.url("/graphql"), &[AS_OUTSIDER, JSON], body.clone()).await.assert_error(403, "scope_denied");
    post(&gate.url("/graphql"), &[("authorization", "Bearer nobody"), JSON], body.clone())
        .await
        .assert_error(401, "unauthenticated");
    const AS_LIMITED: &[(&str, &str)] = &[("authorization", "Bearer limited-token"), JSON];
    let joined: Vec<Pending> = (0..2).map(|_| spawn_post(gate.url("/graphql"), AS_LIMITED, body.clone())).collect();
    until_in_flight(&gate, &fake, 1, 2.0).await;
    let third = post(&gate.url("/graphql"), AS_LIMITED, body.clone()).await;
    assert!(third.assert_error(429, "rate_limited").contains("client `limited`"));
    fake.release();
    assert_eq!(leader.await.unwrap().status, 200);
    for j in joined {
        assert_eq!(j.await.unwrap().status, 200);
    }
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn an_answer_too_large_to_share_is_fetched_by_each_caller() {
    let (gate, fake, _keys) = start("\n[cache]\nmax_entry_bytes = \"1KiB\"\n", |t| t).await;
    fake.hold();
    let url = gate.url("/reports/bytes/4096");
    let first = tokio::spawn({
        let url = url.clone();
        async move { get(&url, &[AS_DASHBOARD]).await }
    });
    until_in_flight(&gate, &fake, 1, 0.0).await;
    let second = tokio::spawn(async move { get(&url, &[AS_DASHBOARD]).await });
    until_in_flight(&gate, &fake, 1, 1.0).await;
    fake.release();
    for reply in [first.await.unwrap(), second.await.unwrap()] {
        assert_eq!((reply.status.as_u16(), reply.body.len()), (200, 4096));
    }
    assert_eq!(fake.calls(), 2, "the follower made its own call");
}
