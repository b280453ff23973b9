//! The shared state every request reads: an immutable snapshot of the running
//! configuration, its keys and its upstream client, plus readiness.
//!
//! A request loads the snapshot once (`Gate::runtime`) and uses it to the
//! end, so a reload that swaps in a new one never changes a request midway.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Settings;
use crate::forward::{self, UpstreamClient};
use crate::keys::KeyStore;
use crate::limit::{LimitClock, Limiters};

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
    runtime: ArcSwap<Runtime>,
    serving: AtomicBool,
    in_flight: AtomicUsize,
}

impl Gate {
    /// A gate serving `runtime`, not yet marked as serving.
    pub fn new(runtime: Runtime) -> Arc<Self> {
        Arc::new(Self {
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
