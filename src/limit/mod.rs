//! Rate limits: step 4 of the request path, after the scope check and before
//! forwarding. A request passes, in order: the cool-down of its key and
//! budget (after an upstream 429), the key's in-flight cap, then the client,
//! key and budget GCRA limits, and is charged only if it passes them all.
//!
//! Limits are specified as governor `Quota`s and read governor's clocks (so
//! tests fake time), but the GCRA cells are ours: governor charges a limiter
//! the moment it admits, and has no way to test several limiters and charge
//! them only together, nor to give a charge back when the shared Redis
//! limiter (`shared`) refuses after the local ones passed.
//!
//! With `[limits] redis` set, every limit is also enforced across replicas
//! (`admit_shared`), after the local check: local limits are never looser,
//! so they refuse cheaply first.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, FakeRelativeClock, QuantaClock, QuantaInstant, Reference};
use governor::Quota;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Settings;
use crate::error::ProxyError;

mod shared;

pub use shared::SharedSettings;
use shared::{Cell, SharedLimiter, Verdict};

/// The period a limit's count refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// `per_second`.
    Second,
    /// `per_minute`.
    Minute,
}

/// A validated GCRA limit: `count` requests per period, bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per period on average.
    pub count: NonZeroU32,
    /// The period.
    pub per: Per,
    /// Requests allowed back to back.
    pub burst: NonZeroU32,
}

impl Limit {
    /// The limit as a governor quota.
    pub fn quota(&self) -> Quota {
        let quota = match self.per {
            Per::Second => Quota::per_second(self.count),
            Per::Minute => Quota::per_minute(self.count),
        };
        quota.allow_burst(self.burst)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.per {
            Per::Second => "s",
            Per::Minute => "min",
        };
        write!(f, "{}/{per} burst {}", self.count, self.burst)
    }
}

/// Where limiters read the time: the real monotonic clock, or a fake one in tests.
#[derive(Debug, Clone)]
pub enum LimitClock {
    /// quanta's monotonic clock, counted from when the limiters were first built.
    Real(QuantaClock, QuantaInstant),
    /// A clock that only moves when a test advances it.
    Fake(FakeRelativeClock),
}

impl LimitClock {
    /// The real clock.
    pub fn real() -> Self {
        let clock = QuantaClock::default();
        let start = clock.now();
        Self::Real(clock, start)
    }

    fn now_ns(&self) -> u64 {
        match self {
            Self::Real(clock, start) => clock.now().duration_since(*start).as_u64(),
            Self::Fake(clock) => clock.now().as_u64(),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One GCRA cell: the theoretical arrival time of the next request.
#[derive(Debug)]
pub struct Gcra {
    limit: Limit,
    interval: u64,
    tolerance: u64,
    tat: Mutex<u64>,
}

impl Gcra {
    fn new(limit: Limit) -> Self {
        let quota = limit.quota();
        let interval = nanos(quota.replenish_interval());
        Self { limit, interval, tolerance: interval * u64::from(quota.burst_size().get() - 1), tat: Mutex::new(0) }
    }

    fn lock(&self) -> MutexGuard<'_, u64> {
        // A poisoned cell only means another request panicked mid-update of
        // a plain integer; the value is still usable.
        self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The new TAT if a request at `now` conforms, else how long to wait.
    fn test(&self, tat: u64, now: u64) -> Result<u64, u64> {
        let tat = tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            Err(ahead - self.tolerance)
        } else {
            Ok(tat + self.interval)
        }
    }
}

/// A named limit: its local cell and its key in the shared limiter.
#[derive(Debug)]
struct Named {
    kind: &'static str,
    name: String,
    gcra: Arc<Gcra>,
    shared_key: String,
}

impl Named {
    fn new(kind: &'static str, name: &str, limit: Limit, old: Option<&Named>, prefix: &str) -> Self {
        let gcra = match old {
            Some(o) if o.gcra.limit == limit => Arc::clone(&o.gcra),
            _ => Arc::new(Gcra::new(limit)),
        };
        // The spec is part of the key, so a changed limit starts fresh everywhere.
        let spec = format!("{}{}{}", limit.count, if limit.per == Per::Second { "s" } else { "m" }, limit.burst);
        let shared_key = format!("{prefix}:{{limits}}:{kind}:{name}:{spec}");
        Self { kind, name: name.to_owned(), gcra, shared_key }
    }

    fn describe(&self) -> String {
        format!("{} `{}` ({})", self.kind, self.name, self.gcra.limit)
    }
}

/// A key's or budget's upstream-429 cool-down: requests wait until it ends.
#[derive(Debug, Default)]
pub struct Cooldown {
    until: AtomicU64,
}

/// Why a request was refused, for the 429 and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which kind of limit: `client`, `key`, `budget`, `cooldown`, `in_flight`, `shared`.
    pub kind: &'static str,
    /// The limit's name in the config (client, key or budget name).
    pub name: String,
    /// The limit as the caller is told, e.g. "client `dashboard` (2/s burst 5)".
    pub limit: String,
    /// How long until a retry can pass.
    pub retry_after: Duration,
}

impl From<Refusal> for ProxyError {
    fn from(r: Refusal) -> Self {
        // Whole seconds, rounded up, at least 1: a client that retries after
        // `Retry-After` must not be refused again.
        let secs = r.retry_after.as_secs() + u64::from(r.retry_after.subsec_nanos() > 0);
        ProxyError::RateLimited { limit: r.limit, retry_after_secs: secs.max(1) }
    }
}

#[derive(Debug)]
struct KeyLimits {
    name: String,
    rate: Option<Named>,
    budget: Option<usize>,
    in_flight: Option<(u32, Arc<Semaphore>)>,
    cooldown: Arc<Cooldown>,
}

#[derive(Debug)]
struct BudgetLimits {
    rate: Named,
    cooldown: Arc<Cooldown>,
}

/// Every limiter of one configuration, indexed like `Settings` clients, keys and budgets.
#[derive(Debug)]
pub struct Limiters {
    clock: LimitClock,
    max_cooldown: Duration,
    clients: Vec<(Arc<str>, Option<Named>)>,
    keys: Vec<KeyLimits>,
    budgets: Vec<BudgetLimits>,
    shared: Option<Arc<SharedLimiter>>,
    last_unavailable_log: AtomicU64,
}

/// How the shared limiter let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedCheck {
    /// Passed (or no shared limiter applies).
    Passed,
    /// Redis was unreachable and `fail_open` let it through on local limits.
    WithoutRedis,
}

/// Why the shared limiter refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedRefusal {
    /// A limit across replicas is exhausted.
    Limit(Refusal),
    /// Redis is unreachable and `fail_open` is false.
    Unavailable,
}

/// What an admitted request holds until its response is done.
#[derive(Debug)]
pub struct Admission {
    _in_flight: Option<OwnedSemaphorePermit>,
}

impl Limiters {
    /// Builds the limiters of `settings`, keeping the state of every limit
    /// that `previous` had under the same name and specification.
    pub fn new(settings: &Settings, previous: Option<&Limiters>, clock: LimitClock) -> Self {
        let prefix = settings.shared.as_ref().map_or("mmgate", |s| s.prefix.as_str());
        let clients = settings
            .clients
            .iter()
            .map(|c| {
                let old =
                    previous.and_then(|p| p.clients.iter().find(|(n, _)| *n == c.name)).and_then(|(_, g)| g.as_ref());
                (c.name.clone(), c.limit.map(|l| Named::new("client", &c.name, l, old, prefix)))
            })
            .collect();
        let budgets = settings
            .budgets
            .iter()
            .map(|b| {
                let old = previous.and_then(|p| p.budgets.iter().find(|x| x.rate.name == b.name));
                BudgetLimits {
                    rate: Named::new("budget", &b.name, b.limit, old.map(|o| &o.rate), prefix),
                    cooldown: old.map_or_else(Default::default, |o| Arc::clone(&o.cooldown)),
                }
            })
            .collect();
        let keys = settings
            .keys
            .iter()
            .map(|k| {
                let old = previous.and_then(|p| p.keys.iter().find(|x| x.name == k.name));
                let in_flight = k.max_in_flight.map(|max| match old.and_then(|o| o.in_flight.as_ref()) {
                    Some((n, sem)) if *n == max.get() => (*n, Arc::clone(sem)),
                    _ => (max.get(), Arc::new(Semaphore::new(max.get() as usize))),
                });
                KeyLimits {
                    name: k.name.clone(),
                    rate: k.limit.map(|l| Named::new("key", &k.name, l, old.and_then(|o| o.rate.as_ref()), prefix)),
                    budget: k.budget,
                    in_flight,
                    cooldown: old.map_or_else(Default::default, |o| Arc::clone(&o.cooldown)),
                }
            })
            .collect();
        let shared = settings.shared.as_ref().map(|wanted| match previous.and_then(|p| p.shared.as_ref()) {
            Some(running) if running.settings() == wanted => Arc::clone(running),
            _ => Arc::new(SharedLimiter::start(wanted.clone())),
        });
        let clock = previous.map_or(clock, |p| p.clock.clone());
        Self {
            clock,
            max_cooldown: settings.upstream.max_cooldown,
            clients,
            keys,
            budgets,
            shared,
            last_unavailable_log: AtomicU64::new(0),
        }
    }

    /// The rate limits that apply to `client` on `key`, in locking order.
    fn rates<'a>(&'a self, client: usize, key: &'a KeyLimits) -> impl Iterator<Item = &'a Named> + 'a {
        let client = self.clients.get(client).and_then(|(_, n)| n.as_ref());
        let budget = key.budget.and_then(|b| self.budgets.get(b)).map(|b| &b.rate);
        [client, key.rate.as_ref(), budget].into_iter().flatten()
    }

    /// Admits a request of client `client` on key `key`, or says which limit refused it.
    pub fn admit(&self, client: usize, key: usize) -> Result<Admission, Refusal> {
        let now = self.clock.now_ns();
        let Some(k) = self.keys.get(key) else {
            return Ok(Admission { _in_flight: None });
        };
        let budget = k.budget.and_then(|b| self.budgets.get(b));
        let cooldowns = [Some((&k.cooldown, k.name.as_str())), budget.map(|b| (&b.cooldown, b.rate.name.as_str()))];
        for (cooldown, name) in cooldowns.into_iter().flatten() {
            let until = cooldown.until.load(Ordering::Acquire);
            if until > now {
                return Err(Refusal {
                    kind: "cooldown",
                    name: name.to_owned(),
                    limit: format!("upstream cool-down of `{name}`"),
                    retry_after: Duration::from_nanos(until - now),
                });
            }
        }
        let permit = match &k.in_flight {
            None => None,
            Some((max, semaphore)) => Some(Arc::clone(semaphore).try_acquire_owned().map_err(|_| Refusal {
                kind: "in_flight",
                name: k.name.clone(),
                limit: format!("key `{}` max_in_flight {max}", k.name),
                retry_after: Duration::from_secs(1),
            })?),
        };

        // Locked in a fixed order (client, key, budget), and only for the
        // arithmetic, so no two requests can deadlock and none waits long.
        let mut guards = Vec::with_capacity(3);
        for named in self.rates(client, k) {
            let guard = named.gcra.lock();
            match named.gcra.test(*guard, now) {
                Ok(next) => guards.push((guard, next)),
                Err(wait) => {
                    return Err(Refusal {
                        kind: named.kind,
                        name: named.name.clone(),
                        limit: named.describe(),
                        retry_after: Duration::from_nanos(wait),
                    });
                }
            }
        }
        for (mut guard, next) in guards {
            *guard = next;
        }
        Ok(Admission { _in_flight: permit })
    }

    /// Gives back what `admit` charged locally (after the shared limiter refused).
    fn refund(&self, client: usize, key: &KeyLimits) {
        for named in self.rates(client, key) {
            let mut tat = named.gcra.lock();
            *tat = tat.saturating_sub(named.gcra.interval);
        }
    }

    /// Checks the limits shared across replicas, after `admit` passed locally.
    pub async fn admit_shared(&self, client: usize, key: usize) -> Result<SharedCheck, SharedRefusal> {
        let (Some(shared), Some(k)) = (&self.shared, self.keys.get(key)) else {
            return Ok(SharedCheck::Passed);
        };
        let named: Vec<&Named> = self.rates(client, k).collect();
        if named.is_empty() {
            return Ok(SharedCheck::Passed);
        }
        let cells: Vec<Cell<'_>> = named
            .iter()
            .map(|n| Cell {
                key: &n.shared_key,
                interval_us: n.gcra.interval / 1000,
                tolerance_us: n.gcra.tolerance / 1000,
            })
            .collect();
        match shared.admit(&cells).await {
            Verdict::Admitted => Ok(SharedCheck::Passed),
            Verdict::Refused { index, wait } => {
                self.refund(client, k);
                let (name, limit) = named.get(index).map_or_else(Default::default, |n| (n.name.clone(), n.describe()));
                Err(SharedRefusal::Limit(Refusal {
                    kind: "shared",
                    name,
                    limit: format!("{limit} across replicas"),
                    retry_after: wait,
                }))
            }
            Verdict::Unavailable => {
                self.log_unavailable(shared.settings());
                if shared.settings().fail_open {
                    Ok(SharedCheck::WithoutRedis)
                } else {
                    self.refund(client, k);
                    Err(SharedRefusal::Unavailable)
                }
            }
        }
    }

    /// Logs an unreachable Redis at most once every 10 s.
    fn log_unavailable(&self, settings: &SharedSettings) {
        let now = self.clock.now_ns();
        let last = self.last_unavailable_log.load(Ordering::Relaxed);
        let every = nanos(Duration::from_secs(10));
        if (last == 0 || now.saturating_sub(last) >= every)
            && self.last_unavailable_log.compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let then = if settings.fail_open { "local limits only (fail_open)" } else { "refusing requests (503)" };
            tracing::error!(redis = %settings.display, "shared rate limiter unreachable: {then}");
        }
    }

    /// Starts (or extends) the cool-down of `key` and its budget after an upstream 429.
    ///
    /// Returns the cool-down applied when a new one started, `None` when one was already running.
    pub fn cool_down(&self, key: usize, retry_after: Option<Duration>) -> Option<Duration> {
        let k = self.keys.get(key)?;
        let wait = retry_after.unwrap_or(Duration::from_secs(1)).min(self.max_cooldown);
        let now = self.clock.now_ns();
        let until = now.saturating_add(nanos(wait));
        let budget = k.budget.and_then(|b| self.budgets.get(b)).map(|b| &b.cooldown);
        let before = k.cooldown.until.fetch_max(until, Ordering::AcqRel);
        if let Some(b) = budget {
            b.until.fetch_max(until, Ordering::AcqRel);
        }
        (before <= now).then_some(wait)
    }
}

/// Reads an upstream `Retry-After`: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(client_limit: &str) -> Settings {
        Settings::from_toml(&format!(
            r#"
[keys.a]
env = "X"
scopes = ["reporting"]
limit = {{ per_second = 1, burst = 2 }}
budget = "shared"
[keys.b]
env = "Y"
scopes = ["reporting"]
budget = "shared"
max_in_flight = 1
[budgets.shared]
limit = {{ per_minute = 60, burst = 3 }}
[[routes]]
path = "/a/*"
key = "a"
scope = "reporting"
[[routes]]
path = "/b/*"
key = "b"
scope = "reporting"
[clients.c]
anonymous = true
scopes = ["reporting"]
{client_limit}
"#
        ))
        .unwrap()
    }

    fn fake() -> (FakeRelativeClock, LimitClock) {
        let clock = FakeRelativeClock::default();
        (clock.clone(), LimitClock::Fake(clock))
    }

    #[test]
    fn bursts_then_refuses_with_the_wait() {
        let (clock, lc) = fake();
        let limiters = Limiters::new(&settings(""), None, lc);
        assert!(limiters.admit(0, 0).is_ok());
        assert!(limiters.admit(0, 0).is_ok());
        let r = limiters.admit(0, 0).unwrap_err();
        assert_eq!(r.kind, "key");
        assert_eq!(r.retry_after, Duration::from_secs(1));
        clock.advance(Duration::from_millis(1000));
        assert!(limiters.admit(0, 0).is_ok());
    }

    #[test]
    fn a_refusal_by_a_later_limit_charges_nothing_earlier() {
        let (clock, lc) = fake();
        // Client: 1/s burst 5. Budget (via key b): 1/s burst 3.
        let limiters = Limiters::new(&settings("limit = { per_second = 1, burst = 5 }"), None, lc);
        for _ in 0..3 {
            limiters.admit(0, 1).unwrap();
        }
        for _ in 0..10 {
            assert_eq!(limiters.admit(0, 1).unwrap_err().kind, "budget");
        }
        clock.advance(Duration::from_secs(3));
        // Had the ten refusals charged the client, it would now be 10 s ahead.
        for _ in 0..3 {
            limiters.admit(0, 1).unwrap();
        }
        assert_eq!(limiters.admit(0, 1).unwrap_err().kind, "budget");
    }

    #[test]
    fn in_flight_cap_refuses_until_released() {
        let (_clock, lc) = fake();
        let limiters = Limiters::new(&settings(""), None, lc);
        let first = limiters.admit(0, 1).unwrap();
        assert_eq!(limiters.admit(0, 1).unwrap_err().kind, "in_flight");
        drop(first);
        assert!(limiters.admit(0, 1).is_ok());
    }

    #[test]
    fn cooldowns_cover_the_key_and_its_budget_and_end() {
        let (clock, lc) = fake();
        let limiters = Limiters::new(&settings(""), None, lc);
        assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(2))), Some(Duration::from_secs(2)));
        assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(2))), None, "already cooling down");
        let r = limiters.admit(0, 0).unwrap_err();
        assert_eq!(r.kind, "cooldown");
        assert_eq!(ProxyError::from(r).to_string(), "rate limit `upstream cool-down of `a`` exceeded; retry in 2 s");
        assert_eq!(limiters.admit(0, 1).unwrap_err().kind, "cooldown", "key b shares the budget");
        clock.advance(Duration::from_secs(2));
        assert!(limiters.admit(0, 0).is_ok());
        // Capped by max_cooldown (60 s by default).
        assert_eq!(limiters.cool_down(0, Some(Duration::from_secs(3600))), Some(Duration::from_secs(60)));
    }

    #[test]
    fn reload_keeps_state_of_unchanged_limits_only() {
        let (_clock, lc) = fake();
        let first = Limiters::new(&settings(""), None, lc.clone());
        assert!(first.admit(0, 0).is_ok());
        assert!(first.admit(0, 0).is_ok());
        let same = Limiters::new(&settings(""), Some(&first), lc.clone());
        assert_eq!(same.admit(0, 0).unwrap_err().kind, "key", "state carried over");
        let changed = settings("").keys.clone();
        let mut s = settings("");
        s.keys = changed;
        s.keys[0].limit = Some(Limit { count: NonZeroU32::MIN, per: Per::Second, burst: NonZeroU32::new(5).unwrap() });
        let new = Limiters::new(&s, Some(&first), lc);
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

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = |ms| {
            ProxyError::from(Refusal {
                kind: "key",
                name: "k".into(),
                limit: "k".into(),
                retry_after: Duration::from_millis(ms),
            })
        };
        for (ms, secs) in [(1, 1), (999, 1), (1000, 1), (1001, 2), (0, 1)] {
            match r(ms) {
                ProxyError::RateLimited { retry_after_secs, .. } => assert_eq!(retry_after_secs, secs, "{ms} ms"),
                other => panic!("{other:?}"),
            }
        }
    }
}
