//! Sharing reads: identical reads in flight at once share one upstream call
//! (coalescing), and on routes that ask for it, successful answers are kept
//! for a while (the answer cache). See DESIGN.md, "Saving the company's quota".
//!
//! This module only keeps the state: which reads are in flight, what is
//! cached, and what a read is keyed by. The request path (`proxy::share`)
//! decides what is a read, charges the limits and calls the upstream.

mod key;
mod stored;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use quick_cache::sync::Cache;
use quick_cache::Weighter;
use tokio::sync::watch;

pub use key::ReadKey;
pub use stored::{Served, Stored, X_MMGATE_CACHE};

use crate::config::CacheSettings;
use crate::error::ProxyError;

/// How a shared read ended, as every caller waiting on it learns it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The upstream's answer, whole.
    Answer(Arc<Stored>),
    /// Refused (the key's limits) or failed (the upstream): the same for all.
    Failed(ProxyError),
    /// No answer to share (too large to keep, or the read was given up):
    /// each caller waiting makes its own upstream call.
    Alone,
}

/// One read in flight: whoever joins it waits for its outcome.
#[derive(Debug)]
pub struct Flight {
    key: ReadKey,
    outcome: watch::Sender<Option<Outcome>>,
}

/// A caller waiting on someone else's read.
#[derive(Debug)]
pub struct Joined(watch::Receiver<Option<Outcome>>);

impl Joined {
    /// The read's outcome (`Alone` if the read ended without telling).
    pub async fn outcome(mut self) -> Outcome {
        match self.0.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or(Outcome::Alone),
            Err(_) => Outcome::Alone,
        }
    }
}

/// What a read finds when it arrives.
#[derive(Debug)]
pub enum Arrival {
    /// The same read is in flight: wait for its outcome.
    Join(Joined),
    /// Nobody is reading this: the caller leads, and must `finish` the flight.
    Lead(Arc<Flight>),
}

/// Weighs cached answers by the bytes they hold.
#[derive(Debug, Clone, Copy)]
struct ByBytes;

impl Weighter<ReadKey, Arc<Stored>> for ByBytes {
    fn weight(&self, key: &ReadKey, stored: &Arc<Stored>) -> u64 {
        (key.len() + stored.weight()) as u64
    }
}

/// The reads in flight and the answer cache of one configuration.
pub struct Shares {
    settings: CacheSettings,
    flights: Mutex<HashMap<ReadKey, Arc<Flight>, foldhash::fast::RandomState>>,
    cache: Cache<ReadKey, Arc<Stored>, ByBytes>,
}

impl std::fmt::Debug for Shares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shares").field("settings", &self.settings).field("cached", &self.cache.len()).finish()
    }
}

impl Shares {
    /// Empty, bounded by `settings`.
    pub fn new(settings: CacheSettings) -> Self {
        // quick_cache wants an estimate of the entry count; assume 4 KiB answers.
        let estimated = usize::try_from(settings.max_bytes / 4096).unwrap_or(usize::MAX).clamp(16, 1 << 20);
        Self {
            settings,
            flights: Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default())),
            cache: Cache::with_weighter(estimated, settings.max_bytes, ByBytes),
        }
    }

    /// The bounds it was built with.
    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    fn flights(&self) -> MutexGuard<'_, HashMap<ReadKey, Arc<Flight>, foldhash::fast::RandomState>> {
        // The map is consistent between statements; a panic cannot leave it half-updated.
        self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh cached answer to `key`, if any (an expired one is dropped).
    pub fn cached(&self, key: &ReadKey, now: Instant) -> Option<Arc<Stored>> {
        let stored = self.cache.get(key)?;
        if stored.fresh_at(now) {
            Some(stored)
        } else {
            self.cache.remove(key);
            None
        }
    }

    /// Keeps `stored` as the answer to `key` until it expires.
    pub fn keep(&self, key: ReadKey, stored: Arc<Stored>) {
        if key.len() as u64 + stored.weight() as u64 <= self.settings.max_entry_bytes {
            self.cache.insert(key, stored);
        }
    }

    /// Joins the read of `key` in flight, or starts one that `join` lets others join.
    pub fn arrive(&self, key: ReadKey) -> Arrival {
        let mut flights = self.flights();
        if let Some(flight) = flights.get(&key) {
            return Arrival::Join(Joined(flight.outcome.subscribe()));
        }
        let (outcome, _) = watch::channel(None);
        let flight = Arc::new(Flight { key: key.clone(), outcome });
        flights.insert(key, Arc::clone(&flight));
        Arrival::Lead(flight)
    }

    /// Ends `flight`: later arrivals start afresh, and everyone waiting on it gets `outcome`.
    pub fn finish(&self, flight: &Flight, outcome: Outcome) {
        {
            let mut flights = self.flights();
            if flights.get(&flight.key).is_some_and(|f| std::ptr::eq(Arc::as_ptr(f), flight)) {
                flights.remove(&flight.key);
            }
        }
        // Nobody can join it any more (it left the map above, under the
        // lock joiners take): with no one waiting, there is no one to tell.
        if flight.outcome.receiver_count() > 0 {
            flight.outcome.send_replace(Some(outcome));
        }
    }

    /// Ends `flight` if nobody waits on it any more: `true` when it was given up.
    pub fn abandon_if_unwatched(&self, flight: &Flight) -> bool {
        let mut flights = self.flights();
        if flight.outcome.receiver_count() > 0 {
            return false;
        }
        if flights.get(&flight.key).is_some_and(|f| std::ptr::eq(Arc::as_ptr(f), flight)) {
            flights.remove(&flight.key);
        }
        true
    }

    /// Answers cached now: their count and the bytes they hold.
    pub fn cache_size(&self) -> (u64, u64) {
        (self.cache.len() as u64, self.cache.weight())
    }

    /// Reads in flight now.
    pub fn in_flight(&self) -> usize {
        self.flights().len()
    }

    /// Callers waiting now on a read someone else's request leads.
    pub fn joined(&self) -> usize {
        self.flights().values().map(|f| f.followers()).sum()
    }
}

impl Flight {
    /// Callers waiting on this read besides its leader.
    pub fn followers(&self) -> usize {
        self.outcome.receiver_count()
    }

    /// Resolves once nobody but the leader could still want the outcome
    /// (every follower left); check `Shares::abandon_if_unwatched` then.
    pub async fn unwatched(&self) {
        self.outcome.closed().await;
    }
}

#[cfg(test)]
mod tests;
