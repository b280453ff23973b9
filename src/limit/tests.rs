use std::num::NonZeroU32;

use governor::clock::FakeRelativeClock;

use super::cooldown::parse_retry_after;
use super::*;
use crate::policy::Mode;
use http::{header, HeaderMap};

fn limit(count: u32, per: Per, burst: u32) -> Limit {
    Limit { count: NonZeroU32::new(count).unwrap(), per, burst: NonZeroU32::new(burst).unwrap() }
}

/// Keys `a` (1/s burst 2) and `b` (max_in_flight 1) share budget `shared`
/// (60/min burst 3); client 0 has `client_limit`.
fn specs(client_limit: Option<Limit>) -> LimitSpecs<'static> {
    LimitSpecs {
        clients: vec![("c", client_limit, None)],
        keys: vec![
            KeyLimitSpec {
                name: "a",
                limit: Some(limit(1, Per::Second, 2)),
                budget: Some(0),
                max_in_flight: None,
                max_wait: None,
                mode: None,
            },
            KeyLimitSpec {
                name: "b",
                limit: None,
                budget: Some(0),
                max_in_flight: NonZeroU32::new(1),
                max_wait: None,
                mode: None,
            },
        ],
        budgets: vec![BudgetLimitSpec { name: "shared", limit: limit(60, Per::Minute, 3), max_wait: None, mode: None }],
        shared: None,
        max_cooldown: Duration::from_secs(60),
    }
}

fn fake(specs: &LimitSpecs<'_>) -> (FakeRelativeClock, Limiters<FakeRelativeClock>) {
    let clock = FakeRelativeClock::default();
    (clock.clone(), Limiters::with_clock(specs, None, clock))
}

/// One request of client 0 for `key`, costing one unit, through every local limit.
fn admit(limiters: &Limiters<FakeRelativeClock>, key: usize) -> Result<Admission, Refusal> {
    admit_costing(limiters, key, 1).map_err(|e| match e {
        LimitError::Refused(r) => r,
        other => panic!("{other:?}"),
    })
}

fn admit_costing(limiters: &Limiters<FakeRelativeClock>, key: usize, cost: u32) -> Result<Admission, LimitError> {
    // No limit here sets max_wait, so admission never waits.
    futures_util::FutureExt::now_or_never(limiters.admit(0, key, cost)).expect("no waiting without max_wait")
}

#[test]
fn bursts_then_refuses_with_the_wait() {
    let (clock, limiters) = fake(&specs(None));
    assert!(admit(&limiters, 0).is_ok());
    assert!(admit(&limiters, 0).is_ok());
    let r = admit(&limiters, 0).unwrap_err();
    assert_eq!(r.kind, LimitKind::Key);
    assert_eq!(r.retry_after, Duration::from_secs(1));
    clock.advance(Duration::from_millis(1000));
    assert!(admit(&limiters, 0).is_ok());
}

#[test]
fn a_refusal_by_a_later_limit_charges_nothing_earlier() {
    // Client: 1/s burst 5. Budget (via key b): 1/s burst 3.
    let (clock, limiters) = fake(&specs(Some(limit(1, Per::Second, 5))));
    for _ in 0..3 {
        admit(&limiters, 1).unwrap();
    }
    for _ in 0..10 {
        assert_eq!(admit(&limiters, 1).unwrap_err().kind, LimitKind::Budget);
    }
    clock.advance(Duration::from_secs(3));
    // Had the ten refusals charged the client, it would now be 10 s ahead.
    for _ in 0..3 {
        admit(&limiters, 1).unwrap();
    }
    assert_eq!(admit(&limiters, 1).unwrap_err().kind, LimitKind::Budget);
}

#[test]
fn a_request_costs_its_units_on_every_limit() {
    // Key a: 1/s burst 2; key b: no rate of its own; both: budget 1/s burst 3.
    let (_clock, limiters) = fake(&specs(None));
    drop(admit_costing(&limiters, 0, 2).unwrap());
    let LimitError::Refused(r) = admit_costing(&limiters, 0, 2).unwrap_err() else { panic!() };
    assert_eq!((r.kind, r.retry_after), (LimitKind::Key, Duration::from_secs(2)), "two more units: 2 s");
    let LimitError::Refused(r) = admit_costing(&limiters, 1, 2).unwrap_err() else { panic!() };
    assert_eq!((r.kind, r.retry_after), (LimitKind::Budget, Duration::from_secs(1)), "the budget has 1 unit left");
    drop(admit_costing(&limiters, 1, 1).unwrap());
}

#[test]
fn a_request_costing_more_than_a_burst_could_never_pass() {
    let (_clock, limiters) = fake(&specs(Some(limit(1, Per::Second, 5))));
    let err = admit_costing(&limiters, 1, 4).unwrap_err();
    assert_eq!(err, LimitError::TooCostly { limit: "budget `shared` (60/min burst 3)".into(), cost: 4, burst: 3 });
    let err = admit_costing(&limiters, 1, 6).unwrap_err();
    assert!(matches!(err, LimitError::TooCostly { cost: 6, burst: 5, .. }), "the client's limit first: {err:?}");
    admit_costing(&limiters, 1, 3).unwrap();
}

#[test]
fn refunds_give_back_exactly_what_was_charged() {
    let (_clock, limiters) = fake(&specs(Some(limit(1, Per::Second, 3))));
    let three = limiters.admit_client(0, 3, Mode::Enforce).unwrap();
    assert!(limiters.admit_client(0, 1, Mode::Enforce).is_err());
    three.charge.refund();
    limiters.admit_client(0, 3, Mode::Enforce).unwrap();
    assert!(limiters.admit_client(0, 1, Mode::Enforce).is_err());
    let key = |l: &Limiters<FakeRelativeClock>| {
        futures_util::FutureExt::now_or_never(l.admit_key(0, 1, 3, Mode::Enforce)).unwrap()
    };
    let admitted = key(&limiters).unwrap();
    assert!(key(&limiters).is_err());
    admitted.charge.refund();
    drop(admitted);
    key(&limiters).unwrap();
}

#[test]
fn a_shadowed_limit_never_refuses_and_charges_only_what_it_would_pass() {
    let mut specs = specs(Some(limit(1, Per::Second, 2)));
    specs.clients[0].2 = Some(Mode::Shadow);
    let (clock, limiters) = fake(&specs);
    let charged: Vec<bool> = (0..4)
        .map(|_| {
            let admitted = limiters.admit_client(0, 1, Mode::Enforce).unwrap();
            admitted.shadowed.is_none()
        })
        .collect();
    assert_eq!(charged, [true, true, false, false], "two pass (the burst), two would be refused");
    clock.advance(Duration::from_secs(1));
    // Refusals in shadow charged nothing: one unit is back after 1 s, as when enforcing.
    assert!(limiters.admit_client(0, 1, Mode::Enforce).unwrap().shadowed.is_none());
    assert!(limiters.admit_client(0, 1, Mode::Enforce).unwrap().shadowed.is_some());
    // A limit without a mode of its own follows the request's (client, route or server) mode.
    let (_clock, enforced) = fake(&self::specs(Some(limit(1, Per::Second, 1))));
    enforced.admit_client(0, 1, Mode::Shadow).unwrap();
    let LimitError::Refused(r) = enforced.admit_client(0, 1, Mode::Shadow).unwrap().shadowed.unwrap() else { panic!() };
    assert_eq!(r.kind, LimitKind::Client);
    // On the key's side: a shadowed key limit lets the budget (enforced) decide.
    let mut specs = self::specs(None);
    specs.keys[0].mode = Some(Mode::Shadow);
    let (_clock, limiters) = fake(&specs);
    let outcomes: Vec<_> = (0..4)
        .map(|_| futures_util::FutureExt::now_or_never(limiters.admit_key(0, 0, 1, Mode::Enforce)).unwrap())
        .collect();
    assert!(outcomes[0].as_ref().unwrap().shadowed.is_none());
    assert!(outcomes[1].as_ref().unwrap().shadowed.is_none());
    let third = outcomes[2].as_ref().unwrap();
    assert!(matches!(&third.shadowed, Some(LimitError::Refused(r)) if r.kind == LimitKind::Key), "key a: burst 2");
    match &outcomes[3] {
        Err(LimitError::Refused(r)) => assert_eq!(r.kind, LimitKind::Budget, "the budget (burst 3) still refuses"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn in_flight_cap_refuses_until_released() {
    let (_clock, limiters) = fake(&specs(None));
    let first = admit(&limiters, 1).unwrap();
    assert_eq!(admit(&limiters, 1).unwrap_err().kind, LimitKind::InFlight);
    drop(first);
    assert!(admit(&limiters, 1).is_ok());
}

#[test]
fn cooldowns_cover_the_key_and_its_budget_and_end() {
    let (clock, limiters) = fake(&specs(None));
    assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
    assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(2))), None, "already cooling down");
    let r = admit(&limiters, 0).unwrap_err();
    assert_eq!(
        (r.kind, r.limit.as_str(), r.retry_after),
        (LimitKind::Cooldown, "upstream cool-down of `a`", Duration::from_secs(2))
    );
    assert_eq!(admit(&limiters, 1).unwrap_err().kind, LimitKind::Cooldown, "key b shares the budget");
    clock.advance(Duration::from_secs(2));
    assert!(admit(&limiters, 0).is_ok());
    // Capped by max_cooldown (60 s).
    assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(3600))), Some(Duration::from_secs(60)));
}

#[test]
fn an_upstream_429_cools_down_for_its_retry_after() {
    let (clock, limiters) = fake(&specs(None));
    let mut headers = HeaderMap::new();
    headers.insert(header::RETRY_AFTER, "3".parse().unwrap());
    limiters.upstream_throttled(0, &headers);
    assert_eq!(admit(&limiters, 0).unwrap_err().retry_after, Duration::from_secs(3));
    clock.advance(Duration::from_secs(3));
    assert!(admit(&limiters, 0).is_ok());
    // No Retry-After: 1 s.
    limiters.upstream_throttled(1, &HeaderMap::new());
    assert_eq!(admit(&limiters, 1).unwrap_err().retry_after, Duration::from_secs(1));
}

#[test]
fn reload_keeps_state_of_unchanged_limits_only() {
    let (clock, first) = fake(&specs(None));
    assert!(admit(&first, 0).is_ok());
    assert!(admit(&first, 0).is_ok());
    let same = Limiters::with_clock(&specs(None), Some(&first), clock.clone());
    assert_eq!(admit(&same, 0).unwrap_err().kind, LimitKind::Key, "state carried over");
    let mut changed = specs(None);
    changed.keys[0].limit = Some(limit(1, Per::Second, 5));
    let new = Limiters::with_clock(&changed, Some(&first), clock);
    assert!(admit(&new, 0).is_ok(), "a changed limit starts fresh");
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
