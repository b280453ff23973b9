//! The metrics of saving the company's quota and of rolling policy out:
//! what was answered without an upstream call, waits for a turn, the cache,
//! shadowed refusals, upstream 429s, and how much of each limit is left.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Declared, KeyLabels, Label, LimitLabels, Snapshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    route: Label,
    client: Label,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AvoidedLabels {
    route: Label,
    reason: &'static str,
}

fn wait_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0])
}

/// The quota and policy metrics.
pub(super) struct QuotaMetrics {
    avoided: Family<AvoidedLabels, Counter>,
    limit_wait: Family<LimitLabels, Histogram, fn() -> Histogram>,
    waiting: Gauge,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    joined: Gauge,
    shadow: Family<ShadowLabels, Counter>,
    throttled: Family<KeyLabels, Counter>,
    available: Family<LimitLabels, Gauge<f64, AtomicU64>>,
}

impl QuotaMetrics {
    /// Registers every family in `registry` (under the `mmgate` prefix).
    pub(super) fn register(registry: &mut Registry) -> Self {
        let this = Self {
            avoided: Family::default(),
            limit_wait: Family::new_with_constructor(wait_histogram as fn() -> Histogram),
            waiting: Gauge::default(),
            cache_entries: Gauge::default(),
            cache_bytes: Gauge::default(),
            joined: Gauge::default(),
            shadow: Family::default(),
            throttled: Family::default(),
            available: Family::default(),
        };
        registry.register(
            "upstream_requests_avoided",
            "Requests answered without an upstream call of their own, by route and reason (cache, coalesced, local_refusal)",
            Declared(this.avoided.clone()),
        );
        registry.register(
            "limit_wait_seconds",
            "Time requests waited for their turn under a limit's max_wait, by limit kind and name",
            Declared(this.limit_wait.clone()),
        );
        registry.register("limit_waiting", "Requests waiting for their turn under max_wait now", this.waiting.clone());
        registry.register("cache_entries", "Answers in the answer cache", this.cache_entries.clone());
        registry.register("cache_bytes", "Bytes the answer cache holds", this.cache_bytes.clone());
        registry.register(
            "coalesced_waiting",
            "Requests waiting now for the answer of an identical read in flight",
            this.joined.clone(),
        );
        registry.register(
            "shadow_refusals",
            "Requests forwarded that a policy in shadow mode would have refused, by route, client and error code",
            Declared(this.shadow.clone()),
        );
        registry.register(
            "upstream_throttled",
            "Upstream 429 answers (MachineMetrics' quota exhausted), by key",
            Declared(this.throttled.clone()),
        );
        registry.register(
            "limit_available_ratio",
            "Share of each key's and budget's burst available now (0: exhausted, 1: full), by limit kind and name",
            Declared(this.available.clone()),
        );
        this
    }

    pub(super) fn shadow_refusal(&self, route: &Label, client: &Label, code: &'static str) {
        self.shadow.get_or_create(&ShadowLabels { route: route.clone(), client: client.clone(), code }).inc();
    }

    pub(super) fn avoided(&self, route: &Arc<str>, reason: &'static str) {
        self.avoided.get_or_create(&AvoidedLabels { route: Label(Arc::clone(route)), reason }).inc();
    }

    pub(super) fn limit_wait(&self, kind: &'static str, name: &str, waited: Duration) {
        self.limit_wait.get_or_create(&LimitLabels { limit: kind, name: name.into() }).observe(waited.as_secs_f64());
    }

    pub(super) fn throttled(&self, key: &str) {
        self.throttled.get_or_create(&KeyLabels { key: key.into() }).inc();
    }

    /// Sets the gauges read at scrape time.
    pub(super) fn set(&self, now: &Snapshot) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.waiting.set(gauge(now.waiting as u64));
        self.cache_entries.set(gauge(now.cached.0));
        self.cache_bytes.set(gauge(now.cached.1));
        self.joined.set(gauge(now.joined as u64));
        self.available.clear();
        for (kind, name, ratio) in &now.available {
            self.available.get_or_create(&LimitLabels { limit: kind, name: name.as_str().into() }).set(*ratio);
        }
    }
}
