use super::*;
use http::HeaderValue;

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}

fn post_json(body: &str) -> Result<Vec<GraphqlRequest>, String> {
    from_post(&json_headers(), None, body.as_bytes()).map_err(|e| e.to_string())
}

#[test]
fn objects_and_batches() {
    let one = post_json(r#"{"query":"{a}","operationName":null,"variables":{}}"#).unwrap();
    let params = r#"{"operationName":null,"variables":{}}"#.into();
    assert_eq!(one, [GraphqlRequest { query: "{a}".into(), operation_name: None, params }]);
    let batch = post_json(r#"[{"query":"{a}"},{"query":"query B {b}","operationName":"B"}]"#).unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1].operation_name.as_deref(), Some("B"));
    assert!(post_json("[]").unwrap_err().contains("empty batch"));
    for not_object in ["1", "\"{a}\"", "null", "[1]", "[[{\"query\":\"{a}\"}]]"] {
        assert!(post_json(not_object).is_err(), "{not_object}");
    }
}

#[test]
fn duplicate_keys_are_refused_at_every_depth_even_escaped() {
    for body in [
        r#"{"query":"{a}","query":"mutation{b}"}"#,
        r#"{"query":"{a}","qu\u0065ry":"mutation{b}"}"#,
        r#"{"query":"{a}","operationName":"A","operationName":"B"}"#,
        r#"{"query":"{a}","variables":{"x":1,"x":2}}"#,
        r#"{"query":"{a}","extensions":{"a":[{"b":1,"b":2}]}}"#,
        r#"[{"query":"{a}"},{"query":"{a}","query":"{b}"}]"#,
    ] {
        assert!(post_json(body).unwrap_err().contains("duplicate key"), "{body}");
    }
}

#[test]
fn many_keys_cost_linear_time_and_duplicates_are_still_found() {
    // 200,000 keys: a quadratic duplicate check would take minutes.
    let keys: Vec<String> = (0..200_000).map(|i| format!("\"k{i}\":0")).collect();
    let body = format!(r#"{{"query":"{{a}}","variables":{{{}}}}}"#, keys.join(","));
    let started = std::time::Instant::now();
    assert!(post_json(&body).is_ok());
    let dup = format!(r#"{{"query":"{{a}}","variables":{{{},"k7":1}}}}"#, keys.join(","));
    assert!(post_json(&dup).unwrap_err().contains("duplicate key `k7`"));
    let top = format!(r#"{{{},"query":"{{a}}","k9":1}}"#, keys.join(","));
    assert!(post_json(&top).unwrap_err().contains("duplicate key `k9`"));
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
}

#[test]
fn escapes_are_decoded_before_the_check() {
    let r = post_json(r#"{"query":"\u006dutation { x }"}"#).unwrap();
    assert_eq!(r[0].query, "mutation { x }");
}

#[test]
fn persisted_queries_without_text_are_refused() {
    let e = post_json(r#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"abc"}}}"#).unwrap_err();
    assert!(e.contains("persisted"), "{e}");
    assert!(post_json(r#"{"operationName":"A"}"#).unwrap_err().contains("no `query`"));
    assert!(from_get(Some("extensions=%7B%7D"), b"").is_err());
}

#[test]
fn query_in_both_url_and_body_is_refused() {
    let e = from_post(&json_headers(), Some("query=%7Bb%7D"), br#"{"query":"{a}"}"#).unwrap_err();
    assert!(e.to_string().contains("both"));
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/graphql"));
    assert!(from_post(&h, Some("query=%7Bb%7D"), b"{a}").is_err());
    let ok = from_post(&h, Some("operationName=A"), b"query A {a}").unwrap();
    assert_eq!(ok[0].operation_name.as_deref(), Some("A"));
}

#[test]
fn get_reads_the_url_once() {
    let r = from_get(Some("query=%7B+machines+%7B+name+%7D+%7D&operationName="), b"").unwrap();
    assert_eq!(r[0].query, "{ machines { name } }");
    assert_eq!(r[0].operation_name, None);
    assert!(from_get(Some("query=%7Ba%7D&query=mutation%7Bb%7D"), b"").is_err());
    assert!(from_get(Some("query=%7Ba%7D"), b"{\"query\":\"{b}\"}").is_err());
    assert!(from_get(None, b"").is_err());
}

#[test]
fn media_types_and_encodings() {
    let mut h = HeaderMap::new();
    for (ct, ok) in [
        ("application/json", true),
        ("Application/JSON; charset=UTF-8", true),
        ("application/json; charset=latin1", false),
        ("text/plain", false),
        ("application/x-www-form-urlencoded", false),
        ("multipart/form-data; boundary=x", false),
    ] {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        let r = from_post(&h, None, br#"{"query":"{a}"}"#);
        assert_eq!(r.is_ok(), ok, "{ct}");
        if !ok {
            assert!(matches!(r.unwrap_err(), CarrierError::UnsupportedMedia(_)));
        }
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert!(matches!(from_post(&h, None, b"{}").unwrap_err(), CarrierError::UnsupportedMedia(_)));
    assert!(matches!(from_post(&HeaderMap::new(), None, b"{}").unwrap_err(), CarrierError::UnsupportedMedia(_)));
}

#[test]
fn parameters_compare_as_json_values_whatever_their_order_or_spacing() {
    let a = post_json(r#"{"query":"{a}","variables":{"x":1,"y":[true,{"b":null,"a":"s"}]}}"#).unwrap();
    let b = post_json(r#"{ "variables" : {"y":[true,{"a":"s","b":null}],"x":1}, "query":"{a}" }"#).unwrap();
    assert_eq!(a[0].params, b[0].params);
    let c = post_json(r#"{"query":"{a}","variables":{"x":2}}"#).unwrap();
    assert_ne!(a[0].params, c[0].params);
    let named = post_json(r#"{"query":"{a}","variables":{"x":1},"operationName":"A"}"#).unwrap();
    assert_ne!(named[0].params, post_json(r#"{"query":"{a}","variables":{"x":1}}"#).unwrap()[0].params);
    // Over GET, the URL's JSON parameters are compared as JSON too; other
    // URL parameters (forwarded as well) count as given.
    let get = |q: &str| from_get(Some(q), b"").unwrap().remove(0).params;
    assert_eq!(
        get("query=%7Ba%7D&variables=%7B%22x%22%3A1%7D"),
        get("variables=%7B%20%22x%22%20%3A%201%7D&query=%7Ba%7D")
    );
    assert_ne!(get("query=%7Ba%7D&variables=%7B%22x%22%3A1%7D"), get("query=%7Ba%7D&variables=%7B%22x%22%3A2%7D"));
    assert_ne!(get("query=%7Ba%7D"), get("query=%7Ba%7D&page=2"));
}

#[test]
fn canonical_json_sorts_keys_at_every_depth_and_escapes_as_serde_json_does() {
    let value: serde_json::Value =
        serde_json::from_str(r#"{"b":[1,2.5,{"z":null,"a":"\u00e9\"\n"}],"a":{"y":true,"\u0001x":-0.0}}"#).unwrap();
    assert_eq!(&*canonical(&value), r#"{"a":{"\u0001x":-0.0,"y":true},"b":[1,2.5,{"a":"é\"\n","z":null}]}"#);
    assert_eq!(&*canonical(&serde_json::json!("plain")), r#""plain""#);
}
