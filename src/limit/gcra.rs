//! One limit: its validated specification and its GCRA cell.
//!
//! Limits are specified as governor `Quota`s, but the cells are ours:
//! governor charges a limiter the moment it admits, and has no way to test
//! several limiters and charge them only together, nor to give a charge back
//! when the shared Redis limiter refuses after the local ones passed.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::Quota;

use super::LimitKind;
use crate::policy::Mode;

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

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One GCRA cell: the theoretical arrival time of the next request.
#[derive(Debug)]
pub(super) struct Gcra {
    limit: Limit,
    pub(super) interval: u64,
    pub(super) tolerance: u64,
    tat: Mutex<u64>,
}

impl Gcra {
    fn new(limit: Limit) -> Self {
        let quota = limit.quota();
        let interval = nanos(quota.replenish_interval());
        Self { limit, interval, tolerance: interval * u64::from(quota.burst_size().get() - 1), tat: Mutex::new(0) }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, u64> {
        // A poisoned cell only means another request panicked mid-update of
        // a plain integer; the value is still usable.
        self.tat.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The new TAT if a request costing `cost` units at `now` conforms, else
    /// how long to wait. A cost above the burst never conforms (see `fits`).
    pub(super) fn test(&self, tat: u64, now: u64, cost: u32) -> Result<u64, u64> {
        let tat = tat.max(now);
        let extra = self.interval.saturating_mul(u64::from(cost.max(1) - 1));
        let ahead = (tat - now).saturating_add(extra);
        if ahead > self.tolerance {
            Err(ahead - self.tolerance)
        } else {
            Ok(tat.saturating_add(extra).saturating_add(self.interval))
        }
    }

    /// Gives back `cost` units charged earlier.
    pub(super) fn refund(&self, cost: u32) {
        let mut tat = self.lock();
        *tat = tat.saturating_sub(self.interval.saturating_mul(u64::from(cost)));
    }

    /// The share of the burst available at `now`: 1 when full, 0 when exhausted.
    pub(super) fn available_ratio(&self, now: u64) -> f64 {
        let capacity = self.tolerance.saturating_add(self.interval);
        let used = self.lock().saturating_sub(now);
        if capacity == 0 {
            return 1.0;
        }
        capacity.saturating_sub(used) as f64 / capacity as f64
    }

    /// Whether a request of `cost` units can ever pass (at most the burst).
    pub(super) fn fits(&self, cost: u32) -> bool {
        cost <= self.limit.burst.get()
    }
}

/// A named limit: its local cell and its key in the shared limiter.
#[derive(Debug)]
pub(super) struct Named {
    pub(super) kind: LimitKind,
    pub(super) name: String,
    pub(super) gcra: Arc<Gcra>,
    pub(super) shared_key: String,
    /// Its own mode, if set (else the request's client's, route's or server's).
    pub(super) mode: Option<Mode>,
}

impl Named {
    /// The cell of `old` when it had the same limit (its state carries over a reload), else a new one.
    pub(super) fn new(
        kind: LimitKind,
        (name, limit, mode): (&str, Limit, Option<Mode>),
        old: Option<&Named>,
        prefix: &str,
    ) -> Self {
        let gcra = match old {
            Some(o) if o.gcra.limit == limit => Arc::clone(&o.gcra),
            _ => Arc::new(Gcra::new(limit)),
        };
        // The spec is part of the key, so a changed limit starts fresh everywhere.
        let spec = format!("{}{}{}", limit.count, if limit.per == Per::Second { "s" } else { "m" }, limit.burst);
        let shared_key = format!("{prefix}:{{limits}}:{}:{name}:{spec}", kind.as_str());
        Self { kind, name: name.to_owned(), gcra, shared_key, mode }
    }

    /// Whether it only records what it would refuse, for a request whose
    /// client, route or server mode is `fallback`.
    pub(super) fn shadowed(&self, fallback: Mode) -> bool {
        self.mode.unwrap_or(fallback) == Mode::Shadow
    }

    /// The limit this cell enforces.
    pub(super) fn limit(&self) -> Limit {
        self.gcra.limit
    }

    /// The refusal for a request that must wait `wait_ns` more.
    pub(super) fn refusal(&self, wait_ns: u64) -> super::Refusal {
        super::Refusal {
            kind: self.kind,
            name: self.name.clone(),
            limit: self.describe(),
            retry_after: std::time::Duration::from_nanos(wait_ns),
            rate: Some(self.limit()),
        }
    }

    /// The refusal for a request costing more than the burst: it could never pass.
    pub(super) fn too_costly(&self, cost: u32) -> super::LimitError {
        super::LimitError::TooCostly { limit: self.describe(), cost, burst: self.gcra.limit.burst.get() }
    }

    /// How the caller is told about it: "client `dashboard` (2/s burst 5)".
    pub(super) fn describe(&self) -> String {
        format!("{} `{}` ({})", self.kind.as_str(), self.name, self.gcra.limit)
    }
}
