//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Label sets are bounded by the configuration: route patterns (or `none`),
//! client, key, budget and limit names, status codes and fixed kinds. Never a
//! path, a token or a key: the only trace of a key is its fingerprint on
//! `mmgate_key_info`, rebuilt at every scrape so a rotated key's old
//! fingerprint disappears.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::keys::{KeyState, KeyStore};

mod process;
mod quota;
mod recent;

/// A label value shared with the configuration (route pattern, client or key name).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Self(s.into())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Label,
    client: Label,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
    name: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    key: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyInfoLabels {
    key: Label,
    fingerprint: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyStateLabels {
    key: Label,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// A family whose HELP and TYPE are written even before its first series,
/// so dashboards and alerts can rely on every family existing from the start
/// (prometheus-client leaves empty families out).
#[derive(Debug)]
struct Declared<M>(M);

impl<M: EncodeMetric> EncodeMetric for Declared<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// Gauges read when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Requests being handled.
    pub in_flight: usize,
    /// Whether the shared limiter is connected (`None`: there is none).
    pub shared_connected: Option<bool>,
    /// Requests waiting for their turn under `max_wait`.
    pub waiting: usize,
    /// Answers cached, and the bytes they hold.
    pub cached: (u64, u64),
    /// Callers waiting on an identical read in flight.
    pub joined: usize,
    /// Share of each key's and budget's burst available: (kind, name, 0..=1).
    pub available: Vec<(&'static str, String, f64)>,
    /// Trace spans dropped and exported so far.
    pub spans: (u64, u64),
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// Every metric mmgate exports; lives as long as the process, across reloads.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    upstream_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    refusals: Family<LimitLabels, Counter>,
    upstream_errors: Family<KindLabels, Counter>,
    unauthorized: Family<KeyLabels, Counter>,
    key_info: Family<KeyInfoLabels, Gauge>,
    key_state: Family<KeyStateLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    in_flight: Gauge,
    shared_unavailable: Counter,
    shared_connected: Gauge,
    quota: quota::QuotaMetrics,
    spans_dropped: Counter,
    spans_exported: Counter,
    recent: recent::Recent,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Upstream failure kinds, each counted from 0.
const UPSTREAM_ERROR_KINDS: [&str; 3] = ["unreachable", "timeout", "body"];

impl Default for Metrics {
    fn default() -> Self {
        // `process_*` at the top level, as every client library names them;
        // mmgate's own under its prefix.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let registry = root.sub_registry_with_prefix("mmgate");
        let requests = Family::default();
        let duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let upstream_duration = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let refusals = Family::default();
        let upstream_errors = Family::default();
        let unauthorized = Family::default();
        let key_info = Family::default();
        let key_state = Family::default();
        let reloads = Family::default();

        let in_flight = Gauge::default();
        let shared_unavailable = Counter::default();
        let shared_connected = Gauge::default();
        registry.register(
            "requests",
            "Requests answered, by route pattern, client and status",
            Declared(requests.clone()),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response body, by route",
            Declared(duration.clone()),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time the upstream took to answer with headers, by route",
            Declared(upstream_duration.clone()),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit, by limit kind and name",
            Declared(refusals.clone()),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures: unreachable, timeout, body (a response body cut or failed)",
            Declared(upstream_errors.clone()),
        );
        registry.register("upstream_unauthorized", "Upstream 401 answers, by key", Declared(unauthorized.clone()));
        registry.register(
            "key_info",
            "1 for each configured key, with its fingerprint (first 8 hex of SHA-256) and state",
            Declared(key_info.clone()),
        );
        registry.register(
            "key_state",
            "1 for each configured key's current state (loaded, missing, stale, rejected), 0 for the others",
            Declared(key_state.clone()),
        );
        registry.register("config_reloads", "Configuration reloads, by result (ok, failed)", Declared(reloads.clone()));
        registry.register(
            "build",
            "The running mmgate's version",
            Info::new(BuildLabels { version: env!("CARGO_PKG_VERSION") }),
        );
        // Series with a fixed set of labels exist, at 0, before their first event.
        for kind in UPSTREAM_ERROR_KINDS {
            drop(upstream_errors.get_or_create(&KindLabels { kind }));
        }
        for result in ["ok", "failed"] {
            drop(reloads.get_or_create(&ResultLabels { result }));
        }
        registry.register("requests_in_flight", "Requests being handled now", Declared(in_flight.clone()));
        registry.register(
            "shared_limiter_unavailable",
            "Requests that found the shared (Redis) limiter unreachable",
            Declared(shared_unavailable.clone()),
        );
        registry.register(
            "shared_limiter_connected",
            "1 while the shared (Redis) limiter is connected, 0 while not; absent without [limits] redis",
            shared_connected.clone(),
        );
        let quota = quota::QuotaMetrics::register(registry);
        let (spans_dropped, spans_exported) = (Counter::default(), Counter::default());
        registry.register(
            "telemetry_spans_dropped",
            "Trace spans dropped: the export queue was full or the collector failed ([telemetry])",
            spans_dropped.clone(),
        );
        registry.register("telemetry_spans_exported", "Trace spans the collector accepted", spans_exported.clone());
        Self {
            recent: recent::Recent::default(),
            quota,
            spans_dropped,
            spans_exported,
            registry: root,
            requests,
            duration,
            upstream_duration,
            refusals,
            upstream_errors,
            unauthorized,
            key_info,
            key_state,
            reloads,
            in_flight,
            shared_unavailable,
            shared_connected,
        }
    }
}

impl Metrics {
    /// Counts a finished request, its duration, and the upstream's time to
    /// answer with headers when it was called.
    pub fn request(
        &self,
        (route, client): (&Label, &Label),
        status: u16,
        duration: Duration,
        upstream: Option<Duration>,
    ) {
        let series = self.recent.series(route, client, status, || recent::Series {
            requests: self
                .requests
                .get_or_create(&RequestLabels { route: route.clone(), client: client.clone(), status })
                .clone(),
            duration: self.duration.get_or_create(&RouteLabels { route: route.clone() }).clone(),
            upstream: self.upstream_duration.get_or_create(&RouteLabels { route: route.clone() }).clone(),
        });
        series.requests.inc();
        series.duration.observe(duration.as_secs_f64());
        if let Some(upstream) = upstream {
            series.upstream.observe(upstream.as_secs_f64());
        }
    }

    /// Counts a refusal by limit `kind` (`client`, `key`, ...) named `name`.
    pub fn refused(&self, kind: &'static str, name: &str) {
        self.refusals.get_or_create(&LimitLabels { limit: kind, name: name.into() }).inc();
    }

    /// Counts an upstream failure of `kind`.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts an upstream 401 for `key`.
    pub fn unauthorized(&self, key: &str) {
        self.unauthorized.get_or_create(&KeyLabels { key: key.into() }).inc();
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabels { result: if ok { "ok" } else { "failed" } }).inc();
    }

    /// Counts a request that went on without the shared limiter.
    pub fn shared_unavailable(&self) {
        self.shared_unavailable.inc();
    }

    /// Counts a request a policy in shadow mode would have refused with `code`.
    pub fn shadow_refusal(&self, route: &Label, client: &Label, code: &'static str) {
        self.quota.shadow_refusal(route, client, code);
    }

    /// Counts an upstream 429 for `key`.
    pub fn upstream_throttled(&self, key: &str) {
        self.quota.throttled(key);
    }

    /// Counts a request answered without an upstream call of its own.
    pub fn avoided(&self, route: &Arc<str>, reason: &'static str) {
        self.quota.avoided(route, reason);
    }

    /// Records how long a request waited for its turn under limit `kind` named `name`.
    pub fn limit_wait(&self, kind: &'static str, name: &str, waited: Duration) {
        self.quota.limit_wait(kind, name, waited);
    }

    /// The Prometheus (OpenMetrics) text, with key info and the gauges of `now`.
    pub fn render(&self, keys: &KeyStore, now: Snapshot) -> String {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.in_flight.set(gauge(now.in_flight as u64));
        self.shared_connected.set(now.shared_connected.map_or(0, i64::from));
        self.quota.set(&now);
        // Counted by the export thread; brought up to date at each scrape.
        let (dropped, exported) = now.spans;
        self.spans_dropped.inc_by(dropped.saturating_sub(self.spans_dropped.get()));
        self.spans_exported.inc_by(exported.saturating_sub(self.spans_exported.get()));
        self.key_info.clear();
        self.key_state.clear();
        for slot in keys.iter() {
            let fingerprint = slot.current().map_or_else(|| "none".to_owned(), |k| k.fingerprint().to_string());
            let current = slot.state();
            let labels = KeyInfoLabels { key: slot.name().into(), fingerprint, state: current.as_str() };
            self.key_info.get_or_create(&labels).set(1);
            for state in KeyState::ALL {
                let labels = KeyStateLabels { key: slot.name().into(), state: state.as_str() };
                self.key_state.get_or_create(&labels).set(i64::from(state == current));
            }
        }
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
