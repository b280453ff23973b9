//! What the limiters are built from and what they answer: specifications,
//! refusals and the kinds of limit.

use std::num::NonZeroU32;
use std::time::Duration;

use super::{Limit, SharedSettings};
use crate::policy::Mode;

/// Which kind of limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// A client's own limit.
    Client,
    /// A key's limit, shared by every client using it.
    Key,
    /// A budget shared by several keys.
    Budget,
    /// The cool-down after an upstream 429.
    Cooldown,
    /// A key's `max_in_flight`.
    InFlight,
    /// A limit enforced across replicas (Redis).
    Shared,
}

impl LimitKind {
    /// The name in metrics and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Key => "key",
            Self::Budget => "budget",
            Self::Cooldown => "cooldown",
            Self::InFlight => "in_flight",
            Self::Shared => "shared",
        }
    }
}

/// Why a request was refused, for the 429 and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which kind of limit.
    pub kind: LimitKind,
    /// The limit's name in the config (client, key or budget name).
    pub name: String,
    /// The limit as the caller is told, e.g. "client `dashboard` (2/s burst 5)".
    pub limit: String,
    /// How long until a retry can pass.
    pub retry_after: Duration,
    /// The rate that refused, for a GCRA limit (not for a cool-down or an in-flight cap).
    pub rate: Option<Limit>,
}

/// Why the local limits did not let a request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitError {
    /// Over a limit now (429).
    Refused(Refusal),
    /// Costs more units than a limit's burst: it could never pass (400).
    TooCostly {
        /// The limit, as the caller is told.
        limit: String,
        /// What the request costs (its operations).
        cost: u32,
        /// The limit's burst.
        burst: u32,
    },
}

/// How the shared limiter let a request through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedCheck {
    /// Passed (or no shared limiter applies).
    Passed,
    /// Passed, but a shadowed limit would have refused it.
    Shadowed(Refusal),
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

/// What the limiters are built from: the config's clients, keys and budgets,
/// in the order requests refer to them.
#[derive(Debug, Clone, Default)]
pub struct LimitSpecs<'a> {
    /// Each client's name, limit and its limit's own mode.
    pub clients: Vec<(&'a str, Option<Limit>, Option<Mode>)>,
    /// Each key's limits.
    pub keys: Vec<KeyLimitSpec<'a>>,
    /// Each budget's limit.
    pub budgets: Vec<BudgetLimitSpec<'a>>,
    /// The limiter shared through Redis, if any.
    pub shared: Option<&'a SharedSettings>,
    /// Cap on an upstream 429's cool-down.
    pub max_cooldown: Duration,
}

/// One key's limits.
#[derive(Debug, Clone)]
pub struct KeyLimitSpec<'a> {
    /// The key's name.
    pub name: &'a str,
    /// Its own limit.
    pub limit: Option<Limit>,
    /// Index of the budget it shares.
    pub budget: Option<usize>,
    /// Cap on its concurrent upstream requests.
    pub max_in_flight: Option<NonZeroU32>,
    /// How long a request over its limit may wait.
    pub max_wait: Option<Duration>,
    /// Its limit's own mode.
    pub mode: Option<Mode>,
}

/// One budget's limit.
#[derive(Debug, Clone)]
pub struct BudgetLimitSpec<'a> {
    /// The budget's name.
    pub name: &'a str,
    /// Its limit.
    pub limit: Limit,
    /// How long a request over it may wait.
    pub max_wait: Option<Duration>,
    /// Its own mode.
    pub mode: Option<Mode>,
}
