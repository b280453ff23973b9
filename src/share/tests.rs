use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};

use super::*;

fn settings() -> CacheSettings {
    CacheSettings { max_bytes: 1 << 20, max_entry_bytes: 64 << 10 }
}

fn key(parts: &[&str]) -> ReadKey {
    parts.iter().fold(ReadKey::builder(), |b, p| b.field(p)).build()
}

fn answer(status: u16, body: &str, headers: &[(header::HeaderName, &'static str)]) -> http::response::Parts {
    let mut response = http::Response::new(());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response.headers_mut().append(name.clone(), HeaderValue::from_static(value));
    }
    let _ = body;
    response.into_parts().0
}

#[test]
fn fields_are_length_prefixed_so_different_sequences_never_collide() {
    assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
    assert_ne!(key(&["a", ""]), key(&["a"]));
    assert_eq!(key(&["a", "b"]), key(&["a", "b"]));
    let none: Option<&str> = None;
    assert_ne!(ReadKey::builder().optional(none).build(), ReadKey::builder().optional(Some("")).build());
    assert!(!format!("{:?}", key(&["secret variables"])).contains("secret"));
}

#[test]
fn a_joined_field_is_the_values_joined_by_commas() {
    let joined = |values: &[&str]| ReadKey::builder().joined(|| values.iter().map(|v| v.as_bytes())).build();
    assert_eq!(joined(&["a", "b, c"]), key(&["a,b, c"]));
    assert_eq!(joined(&["gzip"]), key(&["gzip"]));
    assert_eq!(joined(&[]), key(&[""]));
    assert_ne!(joined(&["a", "b"]), key(&["a", "b"]));
}

#[tokio::test]
async fn a_second_arrival_joins_and_gets_the_leaders_outcome() {
    let shares = Shares::new(settings());
    let Arrival::Lead(flight) = shares.arrive(key(&["q"])) else { panic!("first arrival leads") };
    let Arrival::Join(joined) = shares.arrive(key(&["q"])) else { panic!("second arrival joins") };
    assert!(matches!(shares.arrive(key(&["other"])), Arrival::Lead(_)), "a different read leads its own");
    assert_eq!(flight.followers(), 1);
    let parts = answer(200, "", &[]);
    let stored = Arc::new(Stored::new(&parts, Bytes::from_static(b"{}"), Instant::now(), None, false));
    shares.finish(&flight, Outcome::Answer(Arc::clone(&stored)));
    let Outcome::Answer(got) = joined.outcome().await else { panic!("the answer is shared") };
    assert!(Arc::ptr_eq(&got, &stored));
    assert!(matches!(shares.arrive(key(&["q"])), Arrival::Lead(_)), "a finished read is not joined");
}

#[tokio::test]
async fn a_flight_ended_without_an_outcome_sends_its_followers_alone() {
    let shares = Shares::new(settings());
    let Arrival::Lead(flight) = shares.arrive(key(&["q"])) else { panic!() };
    let Arrival::Join(joined) = shares.arrive(key(&["q"])) else { panic!() };
    drop(flight);
    shares.flights().clear();
    assert!(matches!(joined.outcome().await, Outcome::Alone));
}

#[test]
fn a_flight_is_abandoned_only_once_unwatched() {
    let shares = Shares::new(settings());
    let Arrival::Lead(flight) = shares.arrive(key(&["q"])) else { panic!() };
    let Arrival::Join(joined) = shares.arrive(key(&["q"])) else { panic!() };
    assert!(!shares.abandon_if_unwatched(&flight));
    drop(joined);
    assert!(shares.abandon_if_unwatched(&flight));
    assert_eq!(shares.in_flight(), 0);
}

#[test]
fn only_successful_answers_for_everyone_are_cached_and_only_until_they_expire() {
    let shares = Shares::new(settings());
    let now = Instant::now();
    let ttl = Some(Duration::from_secs(10));
    let ok = Arc::new(Stored::new(&answer(200, "", &[]), Bytes::from_static(b"{\"data\":{}}"), now, ttl, true));
    assert!(ok.cacheable_answer());
    shares.keep(key(&["ok"]), ok);
    assert!(shares.cached(&key(&["ok"]), now + Duration::from_secs(9)).is_some());
    assert!(shares.cached(&key(&["ok"]), now + Duration::from_secs(10)).is_none(), "expired at its ttl");
    assert!(shares.cached(&key(&["ok"]), now).is_none(), "and dropped");

    let refused = [
        Stored::new(&answer(500, "", &[]), Bytes::from_static(b"{}"), now, ttl, false),
        Stored::new(&answer(404, "", &[]), Bytes::from_static(b"{}"), now, ttl, false),
        Stored::new(&answer(200, "", &[(header::SET_COOKIE, "a=b")]), Bytes::new(), now, ttl, false),
        Stored::new(&answer(200, "", &[(header::CACHE_CONTROL, "private, max-age=5")]), Bytes::new(), now, ttl, false),
        Stored::new(&answer(200, "", &[(header::CACHE_CONTROL, "no-store")]), Bytes::new(), now, ttl, false),
        Stored::new(&answer(200, "", &[]), Bytes::from_static(b"{\"errors\":[{\"message\":\"x\"}]}"), now, ttl, true),
        Stored::new(&answer(200, "", &[]), Bytes::from_static(b"[{\"data\":{}},{\"errors\":[]}]"), now, ttl, true),
        Stored::new(&answer(200, "", &[]), Bytes::from_static(b"not json"), now, ttl, true),
        Stored::new(&answer(200, "", &[(header::CONTENT_ENCODING, "gzip")]), Bytes::new(), now, ttl, true),
        Stored::new(&answer(200, "", &[]), Bytes::from_static(b"{}"), now, None, false),
    ];
    for stored in &refused {
        assert!(!stored.cacheable_answer(), "{stored:?}");
    }
    let batch =
        Stored::new(&answer(200, "", &[]), Bytes::from_static(b"[{\"data\":{}},{\"data\":null}]"), now, ttl, true);
    assert!(batch.cacheable_answer());
}

#[test]
fn hits_carry_their_age_and_the_cache_header() {
    let received = Instant::now();
    let parts = answer(200, "", &[(header::AGE, "3")]);
    let stored = Stored::new(&parts, Bytes::from_static(b"{}"), received, Some(Duration::from_secs(60)), false);
    let hit = stored.response(Served::Hit, true, received + Duration::from_millis(5500));
    assert_eq!(hit.headers()[header::AGE], "8");
    assert_eq!(hit.headers()[&X_MMGATE_CACHE], "hit");
    let coalesced = stored.response(Served::Coalesced, false, received);
    assert!(!coalesced.headers().contains_key(&X_MMGATE_CACHE), "only cached routes say how");
    assert_eq!(coalesced.headers()[header::AGE], "3", "the upstream's own Age passes through");
}

#[test]
fn an_answer_larger_than_an_entry_is_not_kept() {
    let shares = Shares::new(CacheSettings { max_bytes: 1 << 20, max_entry_bytes: 1024 });
    let now = Instant::now();
    let big =
        Stored::new(&answer(200, "", &[]), Bytes::from(vec![b'x'; 2048]), now, Some(Duration::from_secs(9)), false);
    shares.keep(key(&["big"]), Arc::new(big));
    assert!(shares.cached(&key(&["big"]), now).is_none());
    assert_eq!(shares.cache_size().0, 0);
}
