//! The series a request updates, kept for the route, client and status
//! pairs seen last: found by the identity of their labels (shared with the
//! configuration) rather than by hashing the label strings into each
//! family, which cost more than the rest of the request's metrics.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Label;

/// How many pairs are kept; a busy proxy sees few at once.
const KEPT: usize = 32;

/// One request's series.
#[derive(Clone)]
pub(super) struct Series {
    pub(super) requests: Counter,
    pub(super) duration: Histogram,
    pub(super) upstream: Histogram,
}

struct Entry {
    route: Arc<str>,
    client: Arc<str>,
    status: u16,
    series: Series,
}

/// The series of the pairs seen last.
#[derive(Default)]
pub(super) struct Recent(Mutex<Vec<Entry>>);

impl Recent {
    /// The series of (`route`, `client`, `status`), made by `make` when not kept.
    pub(super) fn series(&self, route: &Label, client: &Label, status: u16, make: impl FnOnce() -> Series) -> Series {
        let mut entries = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = entries
            .iter()
            .find(|e| e.status == status && Arc::ptr_eq(&e.route, &route.0) && Arc::ptr_eq(&e.client, &client.0));
        if let Some(entry) = found {
            return entry.series.clone();
        }
        let series = make();
        if entries.len() >= KEPT {
            entries.remove(0);
        }
        entries.push(Entry {
            route: Arc::clone(&route.0),
            client: Arc::clone(&client.0),
            status,
            series: series.clone(),
        });
        series
    }
}
