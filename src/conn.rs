//! One caller connection's activity, shared by the connection's driver
//! (`server`), which enforces `header_timeout` and `idle_timeout`, and its
//! requests (`access::Exchange`), which say when a response has ended.
//!
//! hyper's own `header_read_timeout` starts whenever hyper waits for a head,
//! idle keep-alive connections included, so it cannot tell "slow head" (408
//! after `header_timeout`) from "idle" (closed after `idle_timeout`). Here a
//! head is pending from the connection's start, or from the first byte read
//! while no request is in progress, until hyper hands the request over.
//!
//! Nothing here wakes the driver: a request starting or ending would cost the
//! connection's task an extra poll (all of hyper's dispatcher) per request.
//! The driver re-reads `deadline` when its timer fires instead (see `recheck`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What a connection is waiting for, and since when.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Requests whose response has not ended yet.
    active: AtomicU32,
    /// Nanoseconds after `opened` (plus one) when a pending head started; 0: none.
    head_since: AtomicU64,
    /// Nanoseconds after `opened` when the last response ended.
    idle_since: AtomicU64,
}

/// Which timeout a connection's deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiting {
    /// A request head has started and not completed: 408 when it expires.
    Head,
    /// No request in progress: the connection is closed when it expires.
    Idle,
}

impl Activity {
    /// A new connection: a head is expected from now on.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            active: AtomicU32::new(0),
            head_since: AtomicU64::new(1),
            idle_since: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: with no request in progress, they start a head.
    pub fn on_read(&self) {
        if self.active.load(Ordering::Acquire) == 0 && self.head_since.load(Ordering::Acquire) == 0 {
            self.head_since.store(self.now().saturating_add(1), Ordering::Release);
        }
    }

    /// A request head is complete; the guard marks the end of its response.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        RequestGuard(Arc::clone(self))
    }

    /// The next deadline and what it is for; `None` while a request is in progress.
    pub fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<(Instant, Waiting)> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |since: u64, timeout: Duration| self.opened + Duration::from_nanos(since) + timeout;
        match self.head_since.load(Ordering::Acquire) {
            0 => Some((at(self.idle_since.load(Ordering::Acquire), idle_timeout), Waiting::Idle)),
            since => Some((at(since - 1, header_timeout), Waiting::Head)),
        }
    }

    /// When the driver should look again, given the deadline now (from
    /// `deadline(header_timeout, idle_timeout)`): at the deadline, but never
    /// later than the shorter timeout from now, because a head may start (a
    /// deadline `header_timeout` away) or a response end (one `idle_timeout`
    /// away) without anyone saying so. Every deadline is still met exactly:
    /// a look before it only re-arms the timer.
    pub fn recheck(
        deadline: Option<(Instant, Waiting)>,
        (header_timeout, idle_timeout): (Duration, Duration),
        now: Instant,
    ) -> Instant {
        let soon = now + header_timeout.min(idle_timeout);
        match deadline {
            Some((at, Waiting::Head)) => at,
            Some((at, Waiting::Idle)) => at.min(soon),
            None => soon,
        }
    }
}

/// Held while a request's response is in progress.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn heads_then_requests_then_idleness() {
        let (head, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        let activity = Activity::new();
        let start = Instant::now();
        assert_eq!(
            activity.deadline(head, idle),
            Some((start + head, Waiting::Head)),
            "a fresh connection owes a head"
        );
        let guard = activity.begin();
        assert_eq!(activity.deadline(head, idle), None);
        activity.on_read();
        assert_eq!(activity.deadline(head, idle), None, "body bytes of a request in progress start nothing");
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(guard);
        let ended = start + Duration::from_secs(5);
        assert_eq!(activity.deadline(head, idle), Some((ended + idle, Waiting::Idle)));
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.on_read();
        assert_eq!(activity.deadline(head, idle), Some((ended + Duration::from_secs(1) + head, Waiting::Head)));
        activity.on_read();
        assert_eq!(activity.deadline(head, idle).map(|d| d.0), Some(ended + Duration::from_secs(1) + head));
    }

    #[test]
    fn the_driver_looks_again_before_any_deadline_could_have_moved_earlier() {
        let (head, idle, now) = (Duration::from_secs(10), Duration::from_secs(60), Instant::now());
        let later = now + Duration::from_secs(60);
        let recheck = |deadline| Activity::recheck(deadline, (head, idle), now);
        assert_eq!(recheck(Some((later, Waiting::Head))), later, "a head's deadline only moves later");
        assert_eq!(recheck(Some((later, Waiting::Idle))), now + head, "a head may start while idle");
        let sooner = now + Duration::from_secs(3);
        assert_eq!(recheck(Some((sooner, Waiting::Idle))), sooner);
        assert_eq!(recheck(None), now + head, "a response may end while a request runs");
        // An idle timeout shorter than the header timeout: a response that
        // ends right after this look is closed idle_timeout later, not
        // header_timeout later.
        let short_idle = Duration::from_secs(2);
        assert_eq!(Activity::recheck(None, (head, short_idle), now), now + short_idle);
    }
}
