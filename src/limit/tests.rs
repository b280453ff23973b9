use std::num::NonZeroU32;

use governor::clock::FakeRelativeClock;

use super::*;

fn limit(count: u32, per: Per, burst: u32) -> Limit {
    Limit { count: NonZeroU32::new(count).unwrap(), per, burst: NonZeroU32::new(burst).unwrap() }
}

/// Keys `a` (1/s burst 2) and `b` (max_in_flight 1) share budget `shared`
/// (60/min burst 3); client 0 has `client_limit`.
fn specs(client_limit: Option<Limit>) -> LimitSpecs<'static> {
    LimitSpecs {
        clients: vec![("c", client_limit)],
        keys: vec![
            KeyLimitSpec { name: "a", limit: Some(limit(1, Per::Second, 2)), budget: Some(0), max_in_flight: None },
            KeyLimitSpec { name: "b", limit: None, budget: Some(0), max_in_flight: NonZeroU32::new(1) },
        ],
        budgets: vec![("shared", limit(60, Per::Minute, 3))],
        shared: None,
        max_cooldown: Duration::from_secs(60),
    }
}

fn fake(specs: &LimitSpecs<'_>) -> (FakeRelativeClock, Limiters<FakeRelativeClock>) {
    let clock = FakeRelativeClock::default();
    (clock.clone(), Limiters::with_clock(specs, None, clock))
}

#[test]
fn bursts_then_refuses_with_the_wait() {
    let (clock, limiters) = fake(&specs(None));
    assert!(limiters.admit(0, 0).is_ok());
    assert!(limiters.admit(0, 0).is_ok());
    let r = limiters.admit(0, 0).unwrap_err();
    assert_eq!(r.kind, LimitKind::Key);
    assert_eq!(r.retry_after, Duration::from_secs(1));
    clock.advance(Duration::from_millis(1000));
    assert!(limiters.admit(0, 0).is_ok());
}

#[test]
fn a_refusal_by_a_later_limit_charges_nothing_earlier() {
    // Client: 1/s burst 5. Budget (via key b): 1/s burst 3.
    let (clock, limiters) = fake(&specs(Some(limit(1, Per::Second, 5))));
    for _ in 0..3 {
        limiters.admit(0, 1).unwrap();
    }
    for _ in 0..10 {
        assert_eq!(limiters.admit(0, 1).unwrap_err().kind, LimitKind::Budget);
    }
    clock.advance(Duration::from_secs(3));
    // Had the ten refusals charged the client, it would now be 10 s ahead.
    for _ in 0..3 {
        limiters.admit(0, 1).unwrap();
    }
    assert_eq!(limiters.admit(0, 1).unwrap_err().kind, LimitKind::Budget);
}

#[test]
fn in_flight_cap_refuses_until_released() {
    let (_clock, limiters) = fake(&specs(None));
    let first = limiters.admit(0, 1).unwrap();
    assert_eq!(limiters.admit(0, 1).unwrap_err().kind, LimitKind::InFlight);
    drop(first);
    assert!(limiters.admit(0, 1).is_ok());
}

#[test]
fn cooldowns_cover_the_key_and_its_budget_and_end() {
    let (clock, limiters) = fake(&specs(None));
    assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
    assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(2))), None, "already cooling down");
    let r = limiters.admit(0, 0).unwrap_err();
    assert_eq!(
        (r.kind, r.limit.as_str(), r.retry_after),
        (LimitKind::Cooldown, "upstream cool-down of `a`", Duration::from_secs(2))
    );
    assert_eq!(limiters.admit(0, 1).unwrap_err().kind, LimitKind::Cooldown, "key b shares the budget");
    clock.advance(Duration::from_secs(2));
    assert!(limiters.admit(0, 0).is_ok());
    // Capped by max_cooldown (60 s).
    assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(3600))), Some(Duration::from_secs(60)));
}

#[test]
fn an_upstream_429_cools_down_for_its_retry_after() {
    let (clock, limiters) = fake(&specs(None));
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, "3".parse().unwrap());
    limiters.upstream_throttled(0, &headers);
    assert_eq!(limiters.admit(0, 0).unwrap_err().retry_after, Duration::from_secs(3));
    clock.advance(Duration::from_secs(3));
    assert!(limiters.admit(0, 0).is_ok());
    // No Retry-After: 1 s.
    limiters.upstream_throttled(1, &HeaderMap::new());
    assert_eq!(limiters.admit(0, 1).unwrap_err().retry_after, Duration::from_secs(1));
}

#[test]
fn reload_keeps_state_of_unchanged_limits_only() {
    let (clock, first) = fake(&specs(None));
    assert!(first.admit(0, 0).is_ok());
    assert!(first.admit(0, 0).is_ok());
    let same = Limiters::with_clock(&specs(None), Some(&first), clock.clone());
    assert_eq!(same.admit(0, 0).unwrap_err().kind, LimitKind::Key, "state carried over");
    let mut changed = specs(None);
    changed.keys[0].limit = Some(limit(1, Per::Second, 5));
    let new = Limiters::with_clock(&changed, Some(&first), clock);
    assert!(new.admit(0, 0).is_ok(), "a changed limit starts fresh");
}

#[test]
fn retry_after_in_seconds_or_http_date() {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
    let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
    assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
}
