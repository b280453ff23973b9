//! Shadow mode: a policy rolled out before it is enforced forwards what it
//! would refuse and records it; identity, paths, sizes, protocol and
//! MachineMetrics' own limits are never shadowed.

use crate::quota::{gql, metrics_of, start, QUERY};
use crate::support::*;

fn clients() -> String {
    format!(
        r#"
[clients.wanderer]
token_sha256 = "{wanderer}"
scopes = ["erp"]
mode = "shadow"

[clients.limited]
token_sha256 = "{limited}"
scopes = ["reporting"]
limit = {{ per_minute = 60, burst = 1, mode = "shadow" }}

[clients.strict]
token_sha256 = "{strict}"
scopes = ["erp"]
mode = "enforce"

[[routes]]
path = "/trial/graphql"
key = "reporting"
scope = "reporting"
kind = "graphql"
introspection = false
mode = "shadow"
"#,
        wanderer = sha("wanderer-token"),
        limited = sha("limited-token"),
        strict = sha("strict-token"),
    )
}

const AS_WANDERER: (&str, &str) = ("authorization", "Bearer wanderer-token");
const AS_LIMITED: (&str, &str) = ("authorization", "Bearer limited-token");
const AS_STRICT: (&str, &str) = ("authorization", "Bearer strict-token");

fn shadowed(text: &str, route: &str, client: &str, code: &str) -> Option<f64> {
    metric(text, &format!(r#"mmgate_shadow_refusals_total{{route="{route}",client="{client}",code="{code}"}}"#))
}

#[tokio::test]
async fn shadowed_scope_graphql_and_limit_refusals_are_forwarded_and_recorded() {
    let (gate, fake, _keys) = start(&clients(), |t| t).await;
    // A client in shadow mode, without the route's scope.
    assert_eq!(get(&gate.url("/reports/a"), &[AS_WANDERER]).await.status, 200);
    // A route in shadow mode: a mutation it would deny, introspection it would refuse.
    let mutation = gql("mutation { touch { id } }", serde_json::json!({}));
    assert_eq!(post(&gate.url("/trial/graphql"), &[AS_DASHBOARD, JSON], mutation).await.status, 200);
    let schema = gql("{ __schema { types { name } } }", serde_json::json!({}));
    assert_eq!(post(&gate.url("/trial/graphql"), &[AS_DASHBOARD, JSON], schema).await.status, 200);
    // A limit in shadow mode: burst 1, three requests, all forwarded.
    for n in 0..3 {
        assert_eq!(get(&gate.url(&format!("/reports/{n}")), &[AS_LIMITED]).await.status, 200);
    }
    assert_eq!(fake.calls(), 6, "every request was forwarded");

    // Counted as each request's record ends, just after its response.
    let text = eventually("the shadow refusals are counted", std::time::Duration::from_secs(3), || async {
        let text = metrics_of(&gate).await;
        (shadowed(&text, "/reports/*", "limited", "rate_limited") == Some(2.0)).then_some(text)
    })
    .await;
    assert_eq!(shadowed(&text, "/reports/*", "wanderer", "scope_denied"), Some(1.0));
    assert_eq!(shadowed(&text, "/trial/graphql", "dashboard", "scope_denied"), Some(2.0));
    assert_eq!(shadowed(&text, "/reports/*", "limited", "rate_limited"), Some(2.0), "what enforcing would refuse");
    assert_eq!(metric(&text, r#"mmgate_rate_limited_total{limit="client",name="limited"}"#), None, "nothing refused");
}

#[tokio::test]
async fn the_most_specific_mode_wins() {
    let (gate, fake, _keys) = start(&clients(), |t| with_lines(&t, "server", "mode = \"shadow\"")).await;
    // The server shadows everything, but this client enforces its own scopes.
    get(&gate.url("/reports/a"), &[AS_STRICT]).await.assert_error(403, "scope_denied");
    // Without a client or route mode of its own, the server's applies: forwarded.
    let mutation = gql("mutation { touch { id } }", serde_json::json!({}));
    assert_eq!(post(&gate.url("/graphql"), &[AS_DASHBOARD, JSON], mutation).await.status, 200);
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn a_limit_enforcing_itself_refuses_even_under_a_shadowed_client() {
    let extra = format!(
        "\n[clients.trial]\ntoken_sha256 = \"{}\"\nscopes = [\"erp\", \"reporting\"]\nmode = \"shadow\"\nlimit = {{ per_minute = 60, burst = 1, mode = \"enforce\" }}\n",
        sha("trial-token")
    );
    let (gate, fake, _keys) = start(&extra, |t| t).await;
    let trial = ("authorization", "Bearer trial-token");
    assert_eq!(get(&gate.url("/reports/1"), &[trial]).await.status, 200);
    get(&gate.url("/reports/2"), &[trial]).await.assert_error(429, "rate_limited");
    assert_eq!(fake.calls(), 1);
}

#[tokio::test]
async fn identity_paths_sizes_protocol_and_machinemetrics_limits_are_never_shadowed() {
    let (gate, fake, _keys) = start(&clients(), |t| with_lines(&t, "server", "mode = \"shadow\"")).await;
    get(&gate.url("/reports/a"), &[("authorization", "Bearer unknown")]).await.assert_error(401, "unauthenticated");
    get(&gate.url("/reports/a%2Fb"), &[AS_WANDERER]).await.assert_error(400, "bad_request");
    get(&gate.url("/nowhere"), &[AS_WANDERER]).await.assert_error(404, "no_route");
    post(&gate.url("/reports/a"), &[AS_WANDERER], vec![b'x'; 70 * 1024]).await.assert_error(413, "body_too_large");
    let deep = gql("{ a { b { c { d { e { f { g } } } } } } }", serde_json::json!({}));
    post(&gate.url("/graphql"), &[AS_WANDERER, JSON], deep).await.assert_error(400, "graphql_limit");
    post(&gate.url("/graphql"), &[AS_WANDERER, JSON], "{").await.assert_error(400, "bad_graphql");
    let get_mutation = gate.url("/graphql?query=mutation%7Btouch%7Bid%7D%7D");
    get(&get_mutation, &[AS_WANDERER]).await.assert_error(405, "method_not_allowed");
    send(http::Method::TRACE, &gate.url("/reports/a"), &[AS_WANDERER], "")
        .await
        .assert_error(405, "method_not_allowed");
    let carrier = [AS_WANDERER, ("content-type", "text/plain")];
    post(&gate.url("/graphql"), &carrier, QUERY).await.assert_error(415, "unsupported_media_type");
    assert_eq!(fake.calls(), 0);
    let text = metrics_of(&gate).await;
    assert!(!text.contains("mmgate_shadow_refusals_total{"), "nothing was shadowed:\n{text}");
}
