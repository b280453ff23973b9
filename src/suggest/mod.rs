//! `mmgate suggest`: least privilege learnt from traffic. Reads JSON access
//! logs and prints the configuration that would have allowed exactly the
//! traffic that went through: per client the scopes it used and a limit,
//! per key a limit, per GraphQL route the deepest and largest operation.
//!
//! Only requests that passed every enforced policy count (shadowed refusals
//! included, since they were forwarded): a caller probing for what it may
//! not do is refused and so never widens what is suggested.

mod read;
mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

pub use read::{Line, Read};
pub use render::{render, render_with_config};

/// What the traffic in the logs used.
#[derive(Debug, Default)]
pub struct Observed {
    /// Per client name.
    pub clients: BTreeMap<String, Seen>,
    /// Per route pattern.
    pub routes: BTreeMap<String, RouteSeen>,
    /// Requests a shadowed policy would have refused: (client, route, code) → count.
    pub would_refuse: BTreeMap<(String, String, String), u64>,
    /// Requests counted.
    pub used: usize,
    /// The earliest and latest arrival (ns since the epoch).
    pub span: Option<(u64, u64)>,
}

/// What one client (or one route's key) was seen doing.
#[derive(Debug, Default)]
pub struct Seen {
    /// Scopes it used.
    pub scopes: BTreeSet<String>,
    /// Routes it used.
    pub routes: BTreeSet<String>,
    /// (arrival in ns since the epoch, units).
    pub arrivals: Vec<(u64, u64)>,
}

/// What one route was seen carrying.
#[derive(Debug, Default)]
pub struct RouteSeen {
    /// Requests on it.
    pub requests: u64,
    /// The deepest GraphQL operation.
    pub depth: Option<u64>,
    /// The GraphQL operation with the most nodes.
    pub nodes: Option<u64>,
    /// (arrival, units), for its key's limit.
    pub arrivals: Vec<(u64, u64)>,
}

impl Observed {
    /// Gathers what passed in `lines`.
    pub fn of(lines: &[Line]) -> Self {
        let mut observed = Self::default();
        for line in lines {
            if let Some(code) = &line.would_refuse {
                let at = (line.client.clone(), line.route.clone(), code.clone());
                *observed.would_refuse.entry(at).or_default() += 1;
            }
            if !line.passed() {
                continue;
            }
            let Some(arrived) = line.arrived() else { continue };
            let at = u64::try_from(arrived.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()).unwrap_or(0);
            observed.used += 1;
            observed.span = Some(observed.span.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
            let client = observed.clients.entry(line.client.clone()).or_default();
            client.scopes.extend(line.scope.iter().flat_map(|s| s.split(',')).map(str::to_owned));
            client.arrivals.push((at, line.units()));
            client.routes.insert(line.route.clone());
            let route = observed.routes.entry(line.route.clone()).or_default();
            route.requests += 1;
            route.depth = route.depth.max(line.depth);
            route.nodes = route.nodes.max(line.nodes);
            route.arrivals.push((at, line.units()));
        }
        observed
    }
}

/// A limit suggested from the arrivals it must let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suggested {
    /// Units a minute: twice the peak seen.
    pub per_minute: u32,
    /// Units back to back: twice what the arrivals needed at that rate.
    pub burst: u32,
    /// The most units seen within any minute.
    pub peak: u64,
}

/// A limit at twice the peak rate seen per minute, with a burst twice what
/// the arrivals needed at that rate (so the same traffic, replayed, passes
/// it), capped by `cap` (the key's budget, as units a minute and burst).
pub fn suggest_limit(arrivals: &[(u64, u64)], cap: Option<(u32, u32)>) -> Suggested {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let minute = 60_000_000_000u64;
    // The busiest minute: a window sliding over the arrivals.
    let (mut peak, mut sum, mut start) = (0u64, 0u64, 0usize);
    for &(at, units) in &sorted {
        sum += units;
        while sorted[start].0 + minute <= at {
            sum -= sorted[start].1;
            start += 1;
        }
        peak = peak.max(sum);
    }
    let mut per_minute = u32::try_from(peak.saturating_mul(2)).unwrap_or(u32::MAX).max(1);
    if let Some((rate, _)) = cap {
        per_minute = per_minute.min(rate.max(1));
    }
    // GCRA at that rate: the tolerance the arrivals needed.
    let interval = minute / u64::from(per_minute);
    let (mut tat, mut needed, mut largest) = (0u64, 0u64, 1u64);
    for &(at, units) in &sorted {
        tat = tat.max(at);
        let after = tat.saturating_add(units.saturating_mul(interval));
        needed = needed.max(after.saturating_sub(interval).saturating_sub(at));
        tat = after;
        largest = largest.max(units);
    }
    let needed_burst = needed.div_ceil(interval) + 1;
    let mut burst = u32::try_from(needed_burst.saturating_mul(2).max(largest)).unwrap_or(u32::MAX);
    if let Some((_, cap_burst)) = cap {
        burst = burst.min(cap_burst.max(1));
    }
    Suggested { per_minute, burst, peak }
}

/// `mmgate suggest`: what to print, or why nothing can be.
pub fn run(logs: &[impl AsRef<Path>], config: Option<&Path>) -> Result<(String, Read), String> {
    let read = read::read(logs).map_err(|e| format!("cannot read the logs: {e}"))?;
    let observed = Observed::of(&read.lines);
    if observed.used == 0 {
        let why = if read.lines.is_empty() {
            "no access line in the logs: mmgate writes them as JSON with server.log_format = \"json\" (or MMGATE_SERVER__LOG_FORMAT=json)"
        } else {
            "no request in the logs went through (every one was refused by mmgate): nothing to learn from"
        };
        return Err(why.to_owned());
    }
    let text = match config {
        None => render(&observed, &read),
        Some(path) => render_with_config(&observed, &read, path)?,
    };
    Ok((text, read))
}

/// `2026-11-30T12:00:00Z` for ns since the epoch.
fn when(ns: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(ns)).to_string()
}

#[cfg(test)]
mod tests;
