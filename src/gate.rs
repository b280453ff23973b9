//! What the proxy and admin listeners share: the current `Runtime` snapshot
//! (swapped whole on reload), the metrics, readiness and the in-flight count.
//!
//! A request loads the snapshot once (`Gate::runtime`) and uses it to the
//! end, so a reload that swaps in a new one never changes a request midway.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{ConfigError, ConfigOrigin, LogFormat, Settings};
use crate::keys::{KeyError, KeyStore};
use crate::metrics::Metrics;
use crate::runtime::Runtime;

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid or unreadable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A key of the new configuration could not be read.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Keys(Vec<KeyError>),
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

    /// Re-reads the config at `origin` and every key; swaps only if all of
    /// it is valid. On failure the running config stays; either way the
    /// outcome is logged and counted.
    pub fn reload(&self, origin: &ConfigOrigin) -> Result<(), ReloadError> {
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

    fn try_reload(&self, origin: &ConfigOrigin) -> Result<(), ReloadError> {
        let mut settings = Settings::load(origin.clone())?;
        let old = self.runtime();
        let keys = KeyStore::load(settings.keys().iter().map(|k| (k.name.as_str(), &k.source)), Some(old.keys()))
            .map_err(ReloadError::Keys)?;
        // The sockets stay bound where they are: the settings say so, so
        // that what is reported is what is in force.
        for (name, running, configured) in settings.keep_addresses(old.settings().server()) {
            tracing::warn!(setting = name, %running, %configured, "server.{name} changes only with a restart; keeping {running}");
        }
        if settings.telemetry() != old.settings().telemetry() {
            // The exporter and the tracing layer are set up once, at start.
            tracing::warn!("telemetry changes only with a restart; keeping the running [telemetry]");
        }
        crate::logging::set_json(settings.server().log_format == LogFormat::Json);
        for warning in settings.warnings() {
            tracing::warn!("{warning}");
        }
        for slot in keys.iter() {
            let new = slot.current().map(|k| k.fingerprint());
            let was =
                old.keys().iter().find(|o| o.name() == slot.name()).and_then(|o| o.current()).map(|k| k.fingerprint());
            if new != was {
                tracing::info!(
                    key = slot.name(),
                    old_fingerprint = %was.map_or_else(|| "none".to_owned(), |f| f.to_string()),
                    new_fingerprint = %new.map_or_else(|| "none".to_owned(), |f| f.to_string()),
                    "key changed by reload"
                );
            }
        }
        self.runtime.store(Arc::new(Runtime::new(settings, keys, Some(&old))));
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
