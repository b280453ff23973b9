//! Rate limits: step 4 of the request path, after the scope check and before
//! forwarding. A request passes, in order: the cool-down of its key and
//! budget (after an upstream 429), the key's in-flight cap, then the client,
//! key and budget GCRA limits (`gcra`), and is charged only if it passes
//! them all.
//!
//! With `[limits] redis` set, every limit is also enforced across replicas
//! (`admit_shared`), after the local check: local limits are never looser,
//! so they refuse cheaply first.
//!
//! The limiters read the time from a clock given as a type parameter
//! (governor's `Clock`): quanta's monotonic clock in the proxy, a fake one
//! in tests, as linkerd2-proxy's rate limiter does.

mod admit;
mod cooldown;
mod gcra;
mod shared;
mod spec;
mod wait;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, QuantaClock};
use tokio::sync::Semaphore;

use crate::policy::Mode;
pub use admit::{Admission, Charge};
use cooldown::Cooldown;
use gcra::{nanos, Named};
pub use gcra::{Limit, Per};
pub use shared::SharedSettings;
use shared::{Cell, SharedLimiter, Verdict};
pub use spec::{BudgetLimitSpec, KeyLimitSpec, LimitError, LimitKind, LimitSpecs, Refusal, SharedCheck, SharedRefusal};
use wait::Room;

#[derive(Debug)]
struct KeyLimits {
    name: String,
    rate: Option<Named>,
    max_wait: Option<Duration>,
    budget: Option<usize>,
    in_flight: Option<(u32, Arc<Semaphore>)>,
    cooldown: Arc<Cooldown>,
}

#[derive(Debug)]
struct BudgetLimits {
    rate: Named,
    max_wait: Option<Duration>,
    cooldown: Arc<Cooldown>,
}

/// Every limiter of one configuration, indexed like its clients, keys and budgets.
pub struct Limiters<C: Clock = QuantaClock> {
    clock: C,
    start: C::Instant,
    max_cooldown: Duration,
    clients: Vec<(String, Option<Named>)>,
    keys: Vec<KeyLimits>,
    budgets: Vec<BudgetLimits>,
    shared: Option<Arc<SharedLimiter>>,
    last_unavailable_log: AtomicU64,
    room: Arc<Room<C>>,
}

impl<C: Clock> std::fmt::Debug for Limiters<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters").field("clients", &self.clients.len()).field("keys", &self.keys.len()).finish()
    }
}

impl Limiters {
    /// Limiters on the real clock, keeping the state of every limit that
    /// `previous` had under the same name and specification.
    pub fn new(specs: &LimitSpecs<'_>, previous: Option<&Limiters>) -> Self {
        match previous {
            Some(p) => Self::build(specs, Some(p), p.clock.clone(), p.start),
            None => {
                let clock = QuantaClock::default();
                let start = clock.now();
                Self::build(specs, None, clock, start)
            }
        }
    }
}

impl<C: Clock + Clone + Send + Sync + 'static> Limiters<C>
where
    C::Instant: Send + Sync,
{
    /// Limiters reading `clock` (tests give a fake one).
    pub fn with_clock(specs: &LimitSpecs<'_>, previous: Option<&Limiters<C>>, clock: C) -> Self {
        let start = previous.map_or_else(|| clock.now(), |p| p.start);
        Self::build(specs, previous, clock, start)
    }

    fn build(specs: &LimitSpecs<'_>, previous: Option<&Limiters<C>>, clock: C, start: C::Instant) -> Self {
        let prefix = specs.shared.map_or("mmgate", |s| s.prefix.as_str());
        let clients = specs
            .clients
            .iter()
            .map(|&(name, limit, mode)| {
                let old =
                    previous.and_then(|p| p.clients.iter().find(|(n, _)| n == name)).and_then(|(_, g)| g.as_ref());
                (name.to_owned(), limit.map(|l| Named::new(LimitKind::Client, (name, l, mode), old, prefix)))
            })
            .collect();
        let budgets = specs
            .budgets
            .iter()
            .map(|b| {
                let old = previous.and_then(|p| p.budgets.iter().find(|x| x.rate.name == b.name));
                BudgetLimits {
                    rate: Named::new(LimitKind::Budget, (b.name, b.limit, b.mode), old.map(|o| &o.rate), prefix),
                    max_wait: b.max_wait,
                    cooldown: old.map_or_else(Default::default, |o| Arc::clone(&o.cooldown)),
                }
            })
            .collect();
        let keys = specs
            .keys
            .iter()
            .map(|k| {
                let old = previous.and_then(|p| p.keys.iter().find(|x| x.name == k.name));
                let in_flight = k.max_in_flight.map(|max| match old.and_then(|o| o.in_flight.as_ref()) {
                    Some((n, sem)) if *n == max.get() => (*n, Arc::clone(sem)),
                    _ => (max.get(), Arc::new(Semaphore::new(max.get() as usize))),
                });
                let old_rate = old.and_then(|o| o.rate.as_ref());
                KeyLimits {
                    name: k.name.to_owned(),
                    rate: k.limit.map(|l| Named::new(LimitKind::Key, (k.name, l, k.mode), old_rate, prefix)),
                    max_wait: k.max_wait,
                    budget: k.budget,
                    in_flight,
                    cooldown: old.map_or_else(Default::default, |o| Arc::clone(&o.cooldown)),
                }
            })
            .collect();
        let shared = specs.shared.map(|wanted| match previous.and_then(|p| p.shared.as_ref()) {
            Some(running) if running.settings() == wanted => Arc::clone(running),
            _ => Arc::new(SharedLimiter::start(wanted.clone())),
        });
        let room = Arc::new(Room::new(clock.clone(), start));
        Self {
            room,
            clock,
            start,
            max_cooldown: specs.max_cooldown,
            clients,
            keys,
            budgets,
            shared,
            last_unavailable_log: AtomicU64::new(0),
        }
    }

    /// The limits that apply to `client` (and, for a request that goes
    /// upstream, `key` and its budget), in locking order.
    fn rates<'a>(&'a self, client: Option<usize>, key: Option<&'a KeyLimits>) -> impl Iterator<Item = &'a Named> + 'a {
        let client = client.and_then(|c| self.clients.get(c)).and_then(|(_, n)| n.as_ref());
        let key_rate = key.and_then(|k| k.rate.as_ref());
        let budget = key.and_then(|k| k.budget).and_then(|b| self.budgets.get(b)).map(|b| &b.rate);
        [client, key_rate, budget].into_iter().flatten()
    }

    /// Checks the limits shared across replicas, after they passed locally:
    /// with `client`, the client's; with `key` (a request going upstream),
    /// the key's and its budget's; `cost` units each, in one round trip.
    /// Refused, nothing is given back locally: the caller refunds what it
    /// charged. Limits in shadow mode (their own, else `fallback`) never refuse.
    pub async fn admit_shared(
        &self,
        (client, key): (Option<usize>, Option<usize>),
        cost: u32,
        fallback: Mode,
    ) -> Result<SharedCheck, SharedRefusal> {
        let Some(shared) = &self.shared else {
            return Ok(SharedCheck::Passed);
        };
        let key = key.and_then(|k| self.keys.get(k));
        let named: Vec<&Named> = self.rates(client, key).collect();
        if named.is_empty() {
            return Ok(SharedCheck::Passed);
        }
        let cells: Vec<Cell<'_>> = named
            .iter()
            .map(|n| Cell {
                key: &n.shared_key,
                interval_us: n.gcra.interval / 1000,
                tolerance_us: n.gcra.tolerance / 1000,
                cost,
                shadow: n.shadowed(fallback),
            })
            .collect();
        let refusal = |index: usize, wait: Duration| {
            let refused = named.get(index);
            let (name, limit) = refused.map_or_else(Default::default, |n| (n.name.clone(), n.describe()));
            Refusal {
                kind: LimitKind::Shared,
                name,
                limit: format!("{limit} across replicas"),
                retry_after: wait,
                rate: refused.map(|n| n.limit()),
            }
        };
        match shared.admit(&cells).await {
            Verdict::Admitted { shadowed: None } => Ok(SharedCheck::Passed),
            Verdict::Admitted { shadowed: Some((index, wait)) } => Ok(SharedCheck::Shadowed(refusal(index, wait))),
            Verdict::Refused { index, wait } => Err(SharedRefusal::Limit(refusal(index, wait))),
            Verdict::Unavailable => {
                self.log_unavailable(shared.settings());
                if shared.settings().fail_open {
                    Ok(SharedCheck::WithoutRedis)
                } else {
                    Err(SharedRefusal::Unavailable)
                }
            }
        }
    }

    /// Logs an unreachable Redis at most once every 10 s.
    fn log_unavailable(&self, settings: &SharedSettings) {
        let now = self.now_ns();
        let last = self.last_unavailable_log.load(Ordering::Relaxed);
        let every = nanos(Duration::from_secs(10));
        if (last == 0 || now.saturating_sub(last) >= every)
            && self.last_unavailable_log.compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let then = if settings.fail_open { "local limits only (fail_open)" } else { "refusing requests (503)" };
            tracing::error!(redis = %settings.display, "shared rate limiter unreachable: {then}");
        }
    }

    /// The share of each key's and budget's burst available now (kind, name,
    /// 0..=1), for the metrics.
    pub fn available(&self) -> Vec<(&'static str, String, f64)> {
        let now = self.now_ns();
        let keys = self.keys.iter().filter_map(|k| k.rate.as_ref());
        let budgets = self.budgets.iter().map(|b| &b.rate);
        keys.chain(budgets).map(|n| (n.kind.as_str(), n.name.clone(), n.gcra.available_ratio(now))).collect()
    }

    /// Whether the limiter shared through Redis is connected; `None` without one.
    pub fn shared_connected(&self) -> Option<bool> {
        self.shared.as_ref().map(|s| s.connected())
    }
}

#[cfg(test)]
mod tests;
