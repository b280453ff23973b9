use super::*;

const S: u64 = 1_000_000_000;

/// Whether a GCRA limit of `s` lets every arrival through.
fn passes_all(s: Suggested, arrivals: &[(u64, u64)]) -> bool {
    let interval = 60 * S / u64::from(s.per_minute);
    let tolerance = interval * u64::from(s.burst - 1);
    let mut tat = 0u64;
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    sorted.iter().all(|&(at, units)| {
        let from = tat.max(at);
        let extra = interval * (units - 1);
        if from - at + extra > tolerance {
            return false;
        }
        tat = from + extra + interval;
        true
    })
}

#[test]
fn the_limit_is_twice_the_busiest_minute_and_lets_the_same_traffic_through() {
    // 10 a second for 6 s, then quiet, then one every 10 s: busiest minute 60 + 0.
    let mut arrivals: Vec<(u64, u64)> = (0..60).map(|i| (i * S / 10, 1)).collect();
    arrivals.extend((0..10).map(|i| (120 * S + i * 10 * S, 1)));
    let s = suggest_limit(&arrivals, None);
    assert_eq!((s.peak, s.per_minute), (60, 120));
    assert!(passes_all(s, &arrivals), "{s:?}");
    // A naive burst (twice the busiest second) would refuse this traffic.
    assert!(!passes_all(Suggested { burst: 20, ..s }, &arrivals));
    // Batches cost their operations.
    let batches = [(0, 7), (S, 7), (2 * S, 7)];
    let s = suggest_limit(&batches, None);
    assert_eq!(s.peak, 21);
    assert!(s.burst >= 7 && passes_all(s, &batches), "{s:?}");
}

#[test]
fn a_budget_caps_the_limit() {
    let arrivals: Vec<(u64, u64)> = (0..600).map(|i| (i * S / 10, 1)).collect();
    let s = suggest_limit(&arrivals, Some((300, 20)));
    assert_eq!((s.per_minute, s.burst), (300, 20));
}

fn line(client: &str, by: &str, code: Option<&str>, would: Option<&str>, scope: &str) -> Line {
    Line {
        timestamp: "2026-11-30T12:00:00Z".into(),
        client: client.into(),
        route: "/graphql".into(),
        by: by.into(),
        code: code.map(Into::into),
        scope: Some(scope.into()),
        would_refuse: would.map(Into::into),
        operations: Some(2),
        depth: Some(3),
        nodes: Some(4),
        duration_us: 5,
    }
}

#[test]
fn only_what_went_through_counts_and_shadowed_refusals_did() {
    let lines = [
        line("dash", "upstream", None, None, "reporting"),
        line("dash", "upstream", None, Some("scope_denied"), "reporting,write"),
        // Enforced refusals never widen anything: a probe for `admin`.
        line("dash", "mmgate", Some("scope_denied"), None, "admin"),
        line("dash", "mmgate", Some("rate_limited"), None, "reporting"),
        line("none", "mmgate", Some("unauthenticated"), None, "reporting"),
        // Sent, but the upstream failed: it went through mmgate's policies.
        line("erp", "mmgate", Some("upstream_timeout"), None, "erp"),
    ];
    let observed = Observed::of(&lines);
    assert_eq!(observed.used, 3);
    let dash = &observed.clients["dash"];
    assert_eq!(dash.scopes.iter().collect::<Vec<_>>(), ["reporting", "write"]);
    assert_eq!(dash.arrivals.len(), 2);
    assert_eq!(observed.clients["erp"].scopes.iter().collect::<Vec<_>>(), ["erp"]);
    assert!(!observed.clients.contains_key("none"));
    let route = &observed.routes["/graphql"];
    assert_eq!((route.requests, route.depth, route.nodes), (3, Some(3), Some(4)));
    let key = ("dash".to_owned(), "/graphql".to_owned(), "scope_denied".to_owned());
    assert_eq!(observed.would_refuse[&key], 1);
}
