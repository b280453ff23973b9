//! The running keys: one slot per configured key, holding its current value
//! and what the upstream and the key's source said of it lately.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use http::StatusCode;

use super::{Fingerprint, KeyError, KeySource, LoadedKey};

/// A key's state as `/readyz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Read and in use.
    Loaded,
    /// Never read successfully.
    Missing,
    /// Its file is now empty, deleted or unreadable: the previous key is still in use.
    Stale,
    /// Refused by the upstream several times in a row.
    Rejected,
}

impl KeyState {
    /// Every state, in the order metrics list them.
    pub const ALL: [KeyState; 4] = [Self::Loaded, Self::Missing, Self::Stale, Self::Rejected];

    /// The name used on `/readyz` and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::Missing => "missing",
            Self::Stale => "stale",
            Self::Rejected => "rejected",
        }
    }
}

/// Upstream 401s in a row after which a key is reported `rejected`.
pub const REJECTED_AFTER: u32 = 3;

/// The current value of one key; swapped whole when the key changes.
#[derive(Debug)]
pub struct KeySlot {
    name: String,
    source: KeySource,
    current: ArcSwapOption<LoadedKey>,
    unauthorized_in_a_row: AtomicU32,
    /// The last read of the source failed while a previous key stayed in use.
    stale: AtomicBool,
    /// A re-read after an upstream 401 is running (one at a time is enough).
    rereading: AtomicBool,
}

/// What re-reading a key's source found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Same key as before.
    Unchanged,
    /// A new key, now in use.
    Rotated { old: Option<Fingerprint>, new: Fingerprint },
    /// The source could not be read (or was empty): the previous key stays.
    Failed(KeyError),
}

impl KeySlot {
    /// The key as it is now, if it ever loaded.
    pub fn current(&self) -> Option<Arc<LoadedKey>> {
        self.current.load_full()
    }

    /// The name in `[keys.NAME]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the key is read from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Loaded, missing, stale, or rejected by the upstream.
    pub fn state(&self) -> KeyState {
        if self.current.load().is_none() {
            KeyState::Missing
        } else if self.unauthorized_in_a_row.load(Ordering::Acquire) >= REJECTED_AFTER {
            KeyState::Rejected
        } else if self.stale.load(Ordering::Acquire) {
            KeyState::Stale
        } else {
            KeyState::Loaded
        }
    }

    /// Re-reads the source; swaps the key in when it changed, keeps it when the read fails.
    ///
    /// Requests already holding the old key finish with it.
    pub fn refresh(&self) -> Refresh {
        let loaded = match LoadedKey::load(&self.name, &self.source) {
            Ok(loaded) => loaded,
            Err(e) => {
                if self.current.load().is_some() {
                    self.stale.store(true, Ordering::Release);
                }
                return Refresh::Failed(e);
            }
        };
        self.stale.store(false, Ordering::Release);
        let current = self.current.load_full();
        // The whole key is compared: two keys may share a fingerprint.
        if current.as_ref().is_some_and(|k| k.expose() == loaded.expose()) {
            return Refresh::Unchanged;
        }
        let old = current.map(|k| k.fingerprint());
        let new = loaded.fingerprint();
        self.current.store(Some(Arc::new(loaded)));
        // A new key has not been refused yet.
        self.unauthorized_in_a_row.store(0, Ordering::Release);
        Refresh::Rotated { old, new }
    }

    /// Records an upstream 401 for this key; returns how many came in a row.
    pub fn record_unauthorized(&self) -> u32 {
        self.unauthorized_in_a_row.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Records an answer other than 401; returns whether the key was rejected until now.
    pub fn record_accepted(&self) -> bool {
        // Cheap when nothing was recorded: one load, no write.
        self.unauthorized_in_a_row.load(Ordering::Relaxed) != 0
            && self.unauthorized_in_a_row.swap(0, Ordering::AcqRel) >= REJECTED_AFTER
    }

    /// What the upstream's answer with this key says about it. A 401 means
    /// it may have been rotated or revoked: its source is re-read at once
    /// (a rotated file is picked up before the next poll; one re-read at a
    /// time, however many 401s arrive), and several in a row report it
    /// `rejected`. Any other answer means it works.
    pub fn answered(self: &Arc<Self>, status: StatusCode) {
        if status != StatusCode::UNAUTHORIZED {
            if self.record_accepted() {
                tracing::info!(key = self.name(), "key accepted by the upstream again");
            }
            return;
        }
        let in_a_row = self.record_unauthorized();
        if in_a_row == REJECTED_AFTER {
            tracing::error!(
                key = self.name(),
                in_a_row,
                "the upstream refused this key repeatedly: deleted or revoked? /readyz reports it rejected"
            );
        }
        if self.rereading.swap(true, Ordering::AcqRel) {
            return;
        }
        let slot = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            slot.refresh_and_log("upstream answered 401");
            slot.rereading.store(false, Ordering::Release);
        });
    }

    /// Re-reads the key and logs what changed, as every reload path should.
    pub fn refresh_and_log(&self, why: &str) -> Refresh {
        let outcome = self.refresh();
        match &outcome {
            Refresh::Unchanged => tracing::debug!(key = %self.name, why, "key unchanged"),
            Refresh::Rotated { old, new } => tracing::info!(
                key = %self.name,
                old_fingerprint = %old.map_or_else(|| "none".to_owned(), |f| f.to_string()),
                new_fingerprint = %new,
                why,
                "key changed: new requests use the new key"
            ),
            Refresh::Failed(e) => tracing::error!(key = %self.name, why, "{e}; keeping the previous key"),
        }
        outcome
    }
}

/// Every key of the running config, in config order.
#[derive(Debug)]
pub struct KeyStore {
    slots: Vec<Arc<KeySlot>>,
}

impl KeyStore {
    /// Loads every key; the errors of all keys that failed.
    ///
    /// A key whose value is the same as in `previous` (under the same name)
    /// keeps what the upstream said of it: a key it rejected stays rejected.
    pub fn load<'a>(
        keys: impl IntoIterator<Item = (&'a str, &'a KeySource)>,
        previous: Option<&KeyStore>,
    ) -> Result<Self, Vec<KeyError>> {
        let mut slots = Vec::new();
        let mut errors = Vec::new();
        for (name, source) in keys {
            let current = match LoadedKey::load(name, source) {
                Ok(key) => Some(Arc::new(key)),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
            let same_key = |old: &&Arc<KeySlot>| {
                old.name == name
                    && old.current().zip(current.as_ref()).is_some_and(|(old, new)| old.expose() == new.expose())
            };
            let refused = previous
                .and_then(|p| p.slots.iter().find(same_key))
                .map_or(0, |old| old.unauthorized_in_a_row.load(Ordering::Acquire));
            slots.push(Arc::new(KeySlot {
                name: name.to_owned(),
                source: source.clone(),
                current: ArcSwapOption::new(current),
                unauthorized_in_a_row: AtomicU32::new(refused),
                stale: AtomicBool::new(false),
                rereading: AtomicBool::new(false),
            }));
        }
        if errors.is_empty() {
            Ok(Self { slots })
        } else {
            Err(errors)
        }
    }

    /// The slot for key index `id`.
    pub fn slot(&self, id: usize) -> Option<&Arc<KeySlot>> {
        self.slots.get(id)
    }

    /// Every slot, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &KeySlot> {
        self.slots.iter().map(|slot| &**slot)
    }

    /// Re-reads every file key (env keys only change with a restart).
    pub fn refresh_files(&self, why: &str) {
        for slot in self.slots.iter().filter(|s| matches!(s.source, KeySource::File(_))) {
            slot.refresh_and_log(why);
        }
    }
}
