//! Rate limits: step 4 of the request path, after the scope check and before
//! forwarding.
//!
//! This module owns the limit specification parsed from config. The limiters
//! themselves (client, key, budget, upstream 429 cool-down) come with the
//! rate-limiting work and will sit here too.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

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
    /// Time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        let period = match self.per {
            Per::Second => Duration::from_secs(1),
            Per::Minute => Duration::from_secs(60),
        };
        period / self.count.get()
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
