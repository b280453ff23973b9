//! DESIGN.md steps 2 and 3: who is calling, and may it use this route.

use crate::support::*;

const ANONYMOUS: &str = "\n[clients.sidecar]\nanonymous = true\nscopes = [\"reporting\"]\n";

#[tokio::test]
async fn missing_and_unknown_tokens_are_401() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let url = gate.url("/reports/production");
    get(&url, &[]).await.assert_error(401, "unauthenticated");
    for auth in [
        "Bearer wrong-token",
        "Bearer",
        "Bearer ",
        "Basic ZGFzaC10b2tlbi0xOg==",
        "dash-token-1",
        "Bearerdash-token-1",
        "Bearer dash-token-1 extra",
        // A MachineMetrics key is not a client token.
        "Bearer mm-reporting-key-0123456789abcdef",
    ] {
        let reply = get(&url, &[("authorization", auth)]).await;
        reply.assert_error(401, "unauthenticated");
    }
    let reply = get(&url, &[AS_DASHBOARD, AS_DASHBOARD]).await;
    reply.assert_error(401, "unauthenticated");
    upstream.assert_untouched();
}

#[tokio::test]
async fn scheme_is_case_insensitive() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    for auth in ["bearer dash-token-1", "BEARER dash-token-1", "Bearer   dash-token-1"] {
        let reply = get(&gate.url("/reports/production"), &[("authorization", auth)]).await;
        assert_eq!(reply.status, 200, "{auth}");
    }
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn anonymous_client_only_when_configured_and_only_without_a_header() {
    let (gate, upstream, _keys) = Mmgate::with_upstream(ANONYMOUS).await;
    let reply = get(&gate.url("/reports/production"), &[]).await;
    assert_eq!(reply.status, 200);
    // A bad token is refused, never downgraded to anonymous.
    get(&gate.url("/reports/production"), &[("authorization", "Bearer nope")])
        .await
        .assert_error(401, "unauthenticated");
    // The anonymous client's scopes are its own.
    get(&gate.url("/erp/jobdispatch/1"), &[]).await.assert_error(403, "scope_denied");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn scopes_gate_routes() {
    let (gate, upstream, _keys) = Mmgate::with_upstream("").await;
    let message = get(&gate.url("/erp/jobdispatch/7"), &[AS_DASHBOARD]).await.assert_error(403, "scope_denied");
    assert!(message.contains("/erp/*") && message.contains("`erp`"), "{message}");
    upstream.assert_untouched();

    let reply = post(&gate.url("/erp/jobdispatch/start"), &[AS_ERP], "{}").await;
    assert_eq!(reply.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.header("authorization"), Some(&*format!("Bearer {ERP_KEY}")));
}
