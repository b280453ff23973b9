//! Waiting instead of 429: a request over a key's or budget's limit that
//! sets `max_wait` waits for its turn here, up to `max_wait`.
//!
//! Turns are given round-robin by client: one greedy tool with fifty
//! requests waiting gets one turn in every round, like each other client
//! with a request waiting, so it cannot starve them. One task (the pump)
//! runs while anybody waits: it gives each client's oldest request its turn
//! as soon as the limits let it through, and sleeps until the earliest
//! moment one could pass otherwise. A waiter whose caller left is skipped;
//! a turn given to a waiter that left in the meantime is refunded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use smallvec::SmallVec;
use tokio::sync::{oneshot, Notify};

use super::gcra::Gcra;
use super::Cooldown;

/// What one waiting request needs to pass: its cool-downs and cells, and its cost.
pub(super) struct Ticket {
    pub(super) cooldowns: SmallVec<[Arc<Cooldown>; 2]>,
    /// Each cell, and whether it is shadowed: one that would refuse is
    /// skipped (not charged, never waited for) and reported.
    pub(super) cells: SmallVec<[(Arc<Gcra>, bool); 2]>,
    pub(super) cost: u32,
}

/// The cells a request was charged: a key's and its budget's, or a client's.
pub(super) type Cells = SmallVec<[Arc<Gcra>; 2]>;

/// The shadowed cells a charge skipped because they would have refused (bit i: cell i).
pub(super) type Skipped = u8;

impl Ticket {
    /// Charges every cell at `now` if all enforced ones let the request
    /// through (returning the shadowed ones skipped); else how long until
    /// one might.
    pub(super) fn try_charge(&self, now: u64) -> Result<Skipped, u64> {
        for cooldown in &self.cooldowns {
            let until = cooldown.until.load(std::sync::atomic::Ordering::Acquire);
            if until > now {
                return Err(until - now);
            }
        }
        // Locked in a fixed order (key, budget) and only for the arithmetic.
        let mut guards: SmallVec<[_; 2]> = SmallVec::new();
        let mut skipped: Skipped = 0;
        for (i, (cell, shadow)) in self.cells.iter().enumerate() {
            let guard = cell.lock();
            match cell.test(*guard, now, self.cost) {
                Ok(next) => guards.push((guard, next)),
                Err(_) if *shadow => skipped |= 1 << i,
                Err(wait) => return Err(wait),
            }
        }
        for (mut guard, next) in guards {
            *guard = next;
        }
        Ok(skipped)
    }

    /// The cells a charge that skipped `skipped` did charge.
    pub(super) fn charged(&self, skipped: Skipped) -> Cells {
        let charged = self.cells.iter().enumerate().filter(|(i, _)| skipped & (1 << i) == 0);
        charged.map(|(_, (cell, _))| Arc::clone(cell)).collect()
    }

    fn refund(&self, skipped: Skipped) {
        for cell in self.charged(skipped) {
            cell.refund(self.cost);
        }
    }
}

struct Waiter {
    ticket: Arc<Ticket>,
    turn: oneshot::Sender<Skipped>,
}

#[derive(Default)]
struct State {
    /// Clients with a request waiting, in turn order.
    order: VecDeque<usize>,
    queues: HashMap<usize, VecDeque<Waiter>>,
    pumping: bool,
}

/// The requests waiting for a turn, for one set of limiters.
pub(super) struct Room<C: Clock> {
    state: Mutex<State>,
    arrived: Notify,
    clock: C,
    start: C::Instant,
}

impl<C: Clock + Clone + Send + Sync + 'static> Room<C>
where
    C::Instant: Send + Sync,
{
    pub(super) fn new(clock: C, start: C::Instant) -> Self {
        Self { state: Mutex::default(), arrived: Notify::new(), clock, start }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The queues stay consistent between statements; a panic elsewhere
        // cannot leave them half-updated.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }

    /// Requests waiting now.
    pub(super) fn waiting(&self) -> usize {
        self.lock().queues.values().map(VecDeque::len).sum()
    }

    /// Waits for `ticket`'s turn (charged when it comes) up to `max_wait`:
    /// the shadowed cells skipped then, or `None` when the wait ran out.
    /// Dropped, the request leaves the room.
    pub(super) async fn wait(
        self: &Arc<Self>,
        client: usize,
        ticket: Arc<Ticket>,
        max_wait: Duration,
    ) -> Option<Skipped> {
        let (turn, given) = oneshot::channel();
        let start_pump = {
            let mut state = self.lock();
            let queue = state.queues.entry(client).or_default();
            if queue.is_empty() {
                state.order.push_back(client);
            }
            state.queues.entry(client).or_default().push_back(Waiter { ticket, turn });
            !std::mem::replace(&mut state.pumping, true)
        };
        if start_pump {
            tokio::spawn(Arc::clone(self).pump());
        } else {
            self.arrived.notify_one();
        }
        tokio::time::timeout(max_wait, given).await.ok()?.ok()
    }

    /// Gives turns round-robin while anybody waits.
    async fn pump(self: Arc<Self>) {
        loop {
            let Some(sleep) = self.give_turns() else { return };
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.arrived.notified() => {}
            }
        }
    }

    /// Gives every turn the limits allow now, one per client per round.
    /// Returns how long until one might pass, or `None` when nobody waits
    /// (and the pump stops).
    ///
    /// A client whose turn could not be given keeps its place ahead of those
    /// just served: otherwise the same client would always be tried first
    /// when the limit frees one slot, and take every slot.
    fn give_turns(&self) -> Option<Duration> {
        let mut state = self.lock();
        let soonest = loop {
            let mut gave = false;
            let mut soonest: Option<u64> = None;
            let (mut blocked, mut served) = (VecDeque::new(), VecDeque::new());
            while let Some(client) = state.order.pop_front() {
                let Some(queue) = state.queues.get_mut(&client) else { continue };
                // Callers that left (or whose wait ran out) go first.
                while queue.front().is_some_and(|w| w.turn.is_closed()) {
                    queue.pop_front();
                }
                let Some(head) = queue.front() else {
                    state.queues.remove(&client);
                    continue;
                };
                match head.ticket.try_charge(self.now()) {
                    Ok(skipped) => {
                        gave = true;
                        if let Some(waiter) = queue.pop_front() {
                            if waiter.turn.send(skipped).is_err() {
                                waiter.ticket.refund(skipped);
                            }
                        }
                        if queue.is_empty() {
                            state.queues.remove(&client);
                        } else {
                            served.push_back(client);
                        }
                    }
                    Err(wait) => {
                        soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                        blocked.push_back(client);
                    }
                }
            }
            blocked.append(&mut served);
            state.order = blocked;
            if !gave {
                break soonest;
            }
        };
        if state.queues.is_empty() {
            state.pumping = false;
            return None;
        }
        // Waiters may leave without a wake-up: look again at least every 100 ms.
        Some(Duration::from_nanos(soonest.unwrap_or(u64::MAX)).min(Duration::from_millis(100)))
    }
}
