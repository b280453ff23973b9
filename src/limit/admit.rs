//! Admitting one request: the client's own limit (refusing at once), then
//! the key's side (cool-downs, in-flight cap, key and budget limits, waiting
//! for a turn under `max_wait`). A limit in shadow mode never refuses: one
//! that would is skipped, not charged, and reported with the admission, so
//! its would-refuse count is what enforcing it would refuse.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use smallvec::SmallVec;
use tokio::sync::OwnedSemaphorePermit;

use super::gcra::Named;
use super::wait::{Cells, Skipped, Ticket};
use super::{KeyLimits, LimitError, LimitKind, Limiters, Refusal};
use crate::policy::Mode;

/// What a request was charged, to give back if a later step refuses it.
#[derive(Debug, Default)]
pub struct Charge {
    cells: Cells,
    cost: u32,
}

impl Charge {
    /// Gives the charged units back.
    pub fn refund(&self) {
        for cell in &self.cells {
            cell.refund(self.cost);
        }
    }
}

/// A request the client's own limit let through.
#[derive(Debug, Default)]
pub struct ClientAdmission {
    /// What it was charged.
    pub charge: Charge,
    /// What the limit would have refused, were it not in shadow mode.
    pub shadowed: Option<LimitError>,
}

/// What an admitted request holds until its upstream exchange is done.
#[derive(Debug, Default)]
pub struct Admission {
    /// The key's in-flight permit, released when dropped.
    pub(super) _in_flight: Option<OwnedSemaphorePermit>,
    /// How long it waited for its turn, and which limit made it wait.
    pub waited: Option<(Duration, LimitKind, String)>,
    /// What the key's and budget's limits charged.
    pub charge: Charge,
    /// What a limit in shadow mode would have refused.
    pub shadowed: Option<LimitError>,
}

impl<C: Clock + Clone + Send + Sync + 'static> Limiters<C>
where
    C::Instant: Send + Sync,
{
    /// The client's own limit: `cost` units charged, or refused at once. In
    /// shadow mode (its own, else `fallback`) it never refuses.
    pub fn admit_client(&self, client: usize, cost: u32, fallback: Mode) -> Result<ClientAdmission, LimitError> {
        let Some(named) = self.clients.get(client).and_then(|(_, n)| n.as_ref()) else {
            return Ok(ClientAdmission::default());
        };
        let refused = if named.gcra.fits(cost) {
            let now = self.now_ns();
            let mut tat = named.gcra.lock();
            match named.gcra.test(*tat, now, cost) {
                Ok(next) => {
                    *tat = next;
                    let charge = Charge { cells: smallvec::smallvec![Arc::clone(&named.gcra)], cost };
                    return Ok(ClientAdmission { charge, shadowed: None });
                }
                Err(wait) => LimitError::Refused(named.refusal(wait)),
            }
        } else {
            named.too_costly(cost)
        };
        if named.shadowed(fallback) {
            Ok(ClientAdmission { charge: Charge::default(), shadowed: Some(refused) })
        } else {
            Err(refused)
        }
    }

    /// The key's side: its cool-down and its budget's, its in-flight cap,
    /// then its limit and its budget's, charged `cost` units together or
    /// not at all. Over a limit with `max_wait`, the request waits for its
    /// turn (round-robin by `client`) rather than being refused. Limits in
    /// shadow mode (their own, else `fallback`) never refuse nor make it wait.
    pub async fn admit_key(
        &self,
        client: usize,
        key: usize,
        cost: u32,
        fallback: Mode,
    ) -> Result<Admission, LimitError> {
        let Some(k) = self.keys.get(key) else {
            return Ok(Admission::default());
        };
        let budget = k.budget.and_then(|b| self.budgets.get(b));
        let mut shadowed = None;
        let mut rates: SmallVec<[(&Named, Option<Duration>); 2]> = SmallVec::new();
        for (named, max_wait) in
            [k.rate.as_ref().map(|r| (r, k.max_wait)), budget.map(|b| (&b.rate, b.max_wait))].into_iter().flatten()
        {
            if named.gcra.fits(cost) {
                rates.push((named, max_wait));
            } else if named.shadowed(fallback) {
                shadowed.get_or_insert(named.too_costly(cost));
            } else {
                return Err(named.too_costly(cost));
            }
        }
        let in_flight = match &k.in_flight {
            None => None,
            Some((max, semaphore)) => Some(Arc::clone(semaphore).try_acquire_owned().map_err(|_| {
                LimitError::Refused(Refusal {
                    kind: LimitKind::InFlight,
                    name: k.name.clone(),
                    limit: format!("key `{}` max_in_flight {max}", k.name),
                    retry_after: Duration::from_secs(1),
                    rate: None,
                })
            })?),
        };
        let cooldowns = [
            Some((&k.cooldown, k.name.as_str(), k.max_wait)),
            budget.map(|b| (&b.cooldown, b.rate.name.as_str(), b.max_wait)),
        ];
        let ticket = Ticket {
            cooldowns: cooldowns.iter().flatten().map(|(c, ..)| Arc::clone(c)).collect(),
            cells: rates.iter().map(|(n, _)| (Arc::clone(&n.gcra), n.shadowed(fallback))).collect(),
            cost,
        };
        let admitted = |ticket: &Ticket, skipped: Skipped, waited, now: u64| {
            // The first shadowed limit that would have refused, at the moment of the charge.
            let would = rates.iter().enumerate().find(|(i, _)| skipped & (1 << i) != 0).map(|(_, (named, _))| {
                let tat = *named.gcra.lock();
                let wait = named.gcra.test(tat, now, cost).err().unwrap_or_default();
                LimitError::Refused(named.refusal(wait))
            });
            let charge = Charge { cells: ticket.charged(skipped), cost };
            Admission { _in_flight: in_flight, waited, charge, shadowed: shadowed.or(would) }
        };
        let now = self.now_ns();
        let wait = match ticket.try_charge(now) {
            Ok(skipped) => return Ok(admitted(&ticket, skipped, None, now)),
            Err(wait) => wait,
        };
        // What refused: a cool-down first, then the first enforced limit over its rate.
        let refusal = cooldowns
            .iter()
            .flatten()
            .find(|(c, ..)| c.until.load(Ordering::Acquire) > now)
            .map(|(c, name, max_wait)| {
                let refusal = Refusal {
                    kind: LimitKind::Cooldown,
                    name: (*name).to_owned(),
                    limit: format!("upstream cool-down of `{name}`"),
                    retry_after: Duration::from_nanos(c.until.load(Ordering::Acquire).saturating_sub(now)),
                    rate: None,
                };
                (refusal, *max_wait)
            })
            .or_else(|| {
                rates.iter().filter(|(named, _)| !named.shadowed(fallback)).find_map(|(named, max_wait)| {
                    let tat = *named.gcra.lock();
                    named.gcra.test(tat, now, cost).err().map(|w| (named.refusal(w), *max_wait))
                })
            });
        let Some((refusal, Some(max_wait))) = refusal else {
            let refusal = refusal.map_or_else(|| refusal_of_wait(k, wait), |(r, _)| r);
            return Err(LimitError::Refused(refusal));
        };
        if refusal.retry_after > max_wait {
            return Err(LimitError::Refused(refusal));
        }
        let started = tokio::time::Instant::now();
        // Shared with the pump only on this path: most requests never wait.
        let ticket = Arc::new(ticket);
        match self.room.wait(client, Arc::clone(&ticket), max_wait).await {
            Some(skipped) => {
                let waited = Some((started.elapsed(), refusal.kind, refusal.name));
                Ok(admitted(&ticket, skipped, waited, self.now_ns()))
            }
            None => Err(LimitError::Refused(refusal)),
        }
    }

    /// Requests waiting for their turn now.
    pub fn waiting(&self) -> usize {
        self.room.waiting()
    }

    /// Both sides at once, for callers that take no step between them:
    /// charged only if both pass.
    pub async fn admit(&self, client: usize, key: usize, cost: u32) -> Result<Admission, LimitError> {
        let charged = self.admit_client(client, cost, Mode::Enforce)?;
        let admitted = self.admit_key(client, key, cost, Mode::Enforce).await;
        if admitted.is_err() {
            charged.charge.refund();
        }
        admitted
    }

    pub(super) fn now_ns(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }
}

/// A refusal when the limit that refused cannot be named (it changed meanwhile).
fn refusal_of_wait(k: &KeyLimits, wait: u64) -> Refusal {
    Refusal {
        kind: LimitKind::Key,
        name: k.name.clone(),
        limit: format!("key `{}`", k.name),
        retry_after: Duration::from_nanos(wait),
        rate: None,
    }
}
