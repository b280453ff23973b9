//! The shared state every request reads: an immutable snapshot of the running
//! configuration, its keys and its upstream client, plus readiness.
//!
//! A request loads the snapshot once (`Gate::runtime`) and uses it to the
//! end, so a reload that swaps in a new one never changes a request midway.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ConfigOrigin, Settings};
use crate::forward::{self, UpstreamClient};
use crate::keys::KeyStore;
use crate::limit::{LimitClock, Limiters};
use crate::metrics::Metrics;

/// One consistent view of what mmgate serves with.
#[derive(Debug)]
pub struct Runtime {
    /// The validated configuration.
    pub settings: Settings,
    /// The keys its routes use.
    pub keys: KeyStore,
    /// The pooled client for `settings.upstream`.
    pub upstream: UpstreamClient,
    /// Rate limits, in-flight caps and cool-downs.
    pub limiters: Limiters,
}

impl Runtime {
    /// Assembles a runtime; limit state of `previous` carries over where the limit is unchanged.
    pub fn new(settings: Settings, keys: KeyStore, previous: Option<&Runtime>) -> Self {
        let upstream = forward::client(&settings.upstream);
        let limiters = Limiters::new(&settings, previous.map(|p| &p.limiters), LimitClock::real());
        Self { settings, keys, upstream, limiters }
    }
}

/// Everything the proxy and admin listeners share.
#[derive(Debug)]
pub struct Gate {
    /// Metrics, kept across reloads.
    pub metrics: Metrics,
    runtime: ArcSwap<Runtime>,
    serving: AtomicBool,
    in_flight: AtomicUsize,
}

impl Gate {
    /// A gate serving `runtime`, not yet marked as serving.
    pub fn new(runtime: Runtime) -> Arc<Self> {
        Arc::new(Self {
            metrics: Metrics::default(),
            runtime: ArcSwap::from_pointee(runtime),
            serving: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// The current snapshot; hold it for the whole request.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces the snapshot; requests already holding the old one keep it.
    pub fn swap(&self, runtime: Runtime) {
        self.runtime.store(Arc::new(runtime));
    }

    /// Re-reads the config at `origin` and every key; swaps only if all of it is valid.
    ///
    /// On failure the running config stays and the reason is returned (and logged).
    pub fn reload(&self, origin: &ConfigOrigin) -> Result<(), String> {
        crate::notify::reloading();
        let outcome = self.try_reload(origin);
        crate::notify::ready();
        self.metrics.reload(outcome.is_ok());
        match &outcome {
            Ok(()) => tracing::info!(config = %origin, "configuration reloaded"),
            Err(e) => tracing::error!(config = %origin, "reload refused, keeping the running config: {e}"),
        }
        outcome
    }

    fn try_reload(&self, origin: &ConfigOrigin) -> Result<(), String> {
        let mut settings = Settings::load(origin.clone()).map_err(|e| e.to_string())?;
        let old = self.runtime();
        let keys = KeyStore::load(&settings.keys, Some(&old.keys))
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        let (was, now) = (&old.settings.server, &mut settings.server);
        // The sockets stay bound where they are: the settings say so, so
        // that what is reported is what is in force.
        for (name, was, now) in
            [("listen", &was.listen, &mut now.listen), ("admin_listen", &was.admin_listen, &mut now.admin_listen)]
        {
            if was != now {
                tracing::warn!(setting = name, running = %was, configured = %now, "server.{name} changes only with a restart; keeping {was}");
                *now = was.clone();
            }
        }
        crate::logging::set_json(settings.server.log_format == crate::config::LogFormat::Json);
        for warning in &settings.warnings {
            tracing::warn!("{warning}");
        }
        for slot in keys.iter() {
            let new = slot.current().map(|k| k.fingerprint());
            let was =
                old.keys.iter().find(|o| o.name() == slot.name()).and_then(|o| o.current()).map(|k| k.fingerprint());
            if new != was {
                tracing::info!(
                    key = slot.name(),
                    old_fingerprint = %was.map_or_else(|| "none".to_owned(), |f| f.to_string()),
                    new_fingerprint = %new.map_or_else(|| "none".to_owned(), |f| f.to_string()),
                    "key changed by reload"
                );
            }
        }
        self.swap(Runtime::new(settings, keys, Some(&old)));
        Ok(())
    }

    /// Whether the proxy listener is accepting (false before start and during shutdown).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Marks the proxy listener as accepting or not.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Release);
    }

    /// Requests currently being handled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Counts a request as in flight until the guard drops.
    pub fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(self))
    }
}

/// Decrements the in-flight count when dropped.
pub struct InFlight(Arc<Gate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
