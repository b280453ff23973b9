//! The cool-down after an upstream 429: MachineMetrics counts per company,
//! so a 429 for one key pauses that key and every key sharing its budget
//! until the upstream's `Retry-After` (capped by `max_cooldown`) has passed;
//! meanwhile their requests wait or are refused locally.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use http::{header, HeaderMap};

use super::gcra::nanos;
use super::Limiters;

/// A key's or budget's upstream-429 cool-down: requests wait until it ends.
#[derive(Debug, Default)]
pub(super) struct Cooldown {
    pub(super) until: AtomicU64,
}

impl<C: Clock + Clone + Send + Sync + 'static> Limiters<C>
where
    C::Instant: Send + Sync,
{
    /// Starts (or extends) the cool-down of `key` and its budget after an upstream 429.
    ///
    /// Returns the cool-down applied when a new one started, `None` when one was already running.
    pub fn cool_down(&self, key: usize, retry_after: Option<Duration>) -> Option<Duration> {
        let k = self.keys.get(key)?;
        let wait = retry_after.unwrap_or(Duration::from_secs(1)).min(self.max_cooldown);
        let now = self.now_ns();
        let until = now.saturating_add(nanos(wait));
        let budget = k.budget.and_then(|b| self.budgets.get(b)).map(|b| &b.cooldown);
        let before = k.cooldown.until.fetch_max(until, Ordering::AcqRel);
        if let Some(b) = budget {
            b.until.fetch_max(until, Ordering::AcqRel);
        }
        (before <= now).then_some(wait)
    }

    /// An upstream 429 for `key`: its `Retry-After` (seconds or HTTP date, 1 s
    /// when absent) starts a cool-down of the key and its budget, so that
    /// nobody else's request hits the upstream meanwhile.
    pub fn upstream_throttled(&self, key: usize, headers: &HeaderMap) {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        if let Some(cooldown) = self.cool_down(key, retry_after) {
            let name = self.keys.get(key).map_or("?", |k| k.name.as_str());
            tracing::warn!(
                key = name,
                cooldown_secs = cooldown.as_secs_f64(),
                "upstream answered 429: cooling down this key"
            );
        }
    }
}

/// Reads an upstream `Retry-After`: seconds, or an HTTP date.
pub(super) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}
