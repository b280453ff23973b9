//! MachineMetrics API keys: where they come from, their fingerprints, and the
//! store that forwarding reads the current key from.
//!
//! A key is held as a `SecretString` (zeroized on drop, redacted in `Debug`)
//! plus one pre-built `Authorization` header value marked sensitive, so the
//! request path never formats the secret again. Nothing here implements
//! `Display` or `Serialize` for a key; the fingerprint (first 8 hex of its
//! SHA-256) is what logs, `/readyz` and `check` show instead.
//!
//! File keys are re-read when their directory changes (`watch`), every few
//! seconds as a fallback, and at once when the upstream answers 401; a read
//! that fails keeps the previous key.

mod watch;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::limit::Limit;
use crate::policy::ScopeSet;

pub use watch::watch;

/// Where a key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable (read at start; a change needs a restart).
    Env(String),
    /// A file, re-read when it changes; surrounding whitespace is trimmed.
    File(PathBuf),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(var) => write!(f, "environment variable {var}"),
            Self::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

/// One configured key: its source and what it may do.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The name in `[keys.NAME]`.
    pub name: String,
    /// Where the secret is read from.
    pub source: KeySource,
    /// Scopes granted to the key upstream.
    pub scopes: ScopeSet,
    /// Limit shared by every client using this key.
    pub limit: Option<Limit>,
    /// Index of the budget this key shares, if any.
    pub budget: Option<usize>,
    /// Cap on concurrent upstream requests with this key.
    pub max_in_flight: Option<std::num::NonZeroU32>,
}

/// Why a key could not be loaded; never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key `{key}`: environment variable {var} is not set")]
    EnvMissing { key: String, var: String },
    #[error("key `{key}`: environment variable {var} is empty")]
    EnvEmpty { key: String, var: String },
    #[error("key `{key}`: cannot read file {path}: {reason}")]
    FileUnreadable { key: String, path: String, reason: String },
    #[error("key `{key}`: file {path} is empty")]
    FileEmpty { key: String, path: String },
    #[error("key `{key}` from {from} contains characters not allowed in an HTTP header")]
    NotAHeaderValue { key: String, from: KeySource },
}

/// Why a key file could not be read, and what to do, in an operator's words.
fn unreadable(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file; create it or fix the path".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
            format!(
                "permission denied: mmgate runs as uid {uid} (gid {gid}), which must be able to read the file and enter its directories (e.g. owner {uid}, mode 0400)"
            )
        }
        std::io::ErrorKind::IsADirectory => "it is a directory; point to the key file inside it".to_owned(),
        _ => e.to_string(),
    }
}

/// The first 8 hex digits of a key's SHA-256: safe to show, enough to compare replicas.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 4]);

impl Fingerprint {
    /// The fingerprint of `secret`.
    pub fn of(secret: &str) -> Self {
        let digest = Sha256::digest(secret.as_bytes());
        Self([digest[0], digest[1], digest[2], digest[3]])
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A key that has been read: the secret, its fingerprint, and its header.
pub struct LoadedKey {
    secret: SecretString,
    fingerprint: Fingerprint,
    authorization: HeaderValue,
}

impl fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl LoadedKey {
    fn new(key: &str, source: &KeySource, secret: &str) -> Result<Self, KeyError> {
        let header = Zeroizing::new(format!("Bearer {secret}"));
        let mut authorization = HeaderValue::from_maybe_shared(Bytes::copy_from_slice(header.as_bytes()))
            .map_err(|_| KeyError::NotAHeaderValue { key: key.to_owned(), from: source.clone() })?;
        authorization.set_sensitive(true);
        Ok(Self { secret: SecretString::from(secret.to_owned()), fingerprint: Fingerprint::of(secret), authorization })
    }

    /// Reads the key named `key` from `source`.
    pub fn load(key: &str, source: &KeySource) -> Result<Self, KeyError> {
        match source {
            KeySource::Env(var) => {
                let value = Zeroizing::new(
                    std::env::var(var).map_err(|_| KeyError::EnvMissing { key: key.to_owned(), var: var.clone() })?,
                );
                let trimmed = value.trim();
                if trimmed.is_empty() {
                    return Err(KeyError::EnvEmpty { key: key.to_owned(), var: var.clone() });
                }
                Self::new(key, source, trimmed)
            }
            KeySource::File(path) => {
                let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyError::FileUnreadable {
                    key: key.to_owned(),
                    path: path.display().to_string(),
                    reason: unreadable(&e),
                })?);
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(KeyError::FileEmpty { key: key.to_owned(), path: path.display().to_string() });
                }
                Self::new(key, source, trimmed)
            }
        }
    }

    /// The fingerprint shown in place of the key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// `Bearer <key>`, marked sensitive so hyper never logs or indexes it.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// The secret itself, for the rare caller that must compare it.
    pub fn expose(&self) -> &str {
        self.secret.expose_secret()
    }
}

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

    /// Claims the one re-read that an upstream 401 may start; `false` while one runs.
    pub fn begin_reread(&self) -> bool {
        !self.rereading.swap(true, Ordering::AcqRel)
    }

    /// Marks the re-read claimed by `begin_reread` as done.
    pub fn end_reread(&self) {
        self.rereading.store(false, Ordering::Release);
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

/// Every key of the running config, indexed like `Settings::keys`.
#[derive(Debug)]
pub struct KeyStore {
    slots: Vec<KeySlot>,
}

impl KeyStore {
    /// Loads every key; the errors of all keys that failed.
    ///
    /// A key whose value is the same as in `previous` (under the same name)
    /// keeps what the upstream said of it: a key it rejected stays rejected.
    pub fn load(specs: &[KeySpec], previous: Option<&KeyStore>) -> Result<Self, Vec<KeyError>> {
        let mut slots = Vec::with_capacity(specs.len());
        let mut errors = Vec::new();
        for spec in specs {
            let current = match LoadedKey::load(&spec.name, &spec.source) {
                Ok(key) => Some(Arc::new(key)),
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
            let same_key = |old: &&KeySlot| {
                old.name == spec.name
                    && old.current().zip(current.as_ref()).is_some_and(|(old, new)| old.expose() == new.expose())
            };
            let refused = previous
                .and_then(|p| p.slots.iter().find(same_key))
                .map_or(0, |old| old.unauthorized_in_a_row.load(Ordering::Acquire));
            slots.push(KeySlot {
                name: spec.name.clone(),
                source: spec.source.clone(),
                current: ArcSwapOption::new(current),
                unauthorized_in_a_row: AtomicU32::new(refused),
                stale: AtomicBool::new(false),
                rereading: AtomicBool::new(false),
            });
        }
        if errors.is_empty() {
            Ok(Self { slots })
        } else {
            Err(errors)
        }
    }

    /// The slot for key index `id`.
    pub fn slot(&self, id: usize) -> Option<&KeySlot> {
        self.slots.get(id)
    }

    /// Every slot, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &KeySlot> {
        self.slots.iter()
    }

    /// Re-reads every file key (env keys only change with a restart).
    pub fn refresh_files(&self, why: &str) {
        for slot in self.slots.iter().filter(|s| matches!(s.source, KeySource::File(_))) {
            slot.refresh_and_log(why);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_first_8_hex_of_sha256() {
        // sha256("abc") = ba7816bf...
        assert_eq!(Fingerprint::of("abc").to_string(), "ba7816bf");
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = LoadedKey::new("k", &KeySource::Env("X".into()), "mm-very-secret").unwrap();
        let debug = format!("{key:?} {:?}", key.authorization());
        assert!(!debug.contains("mm-very-secret"), "{debug}");
        assert!(key.authorization().is_sensitive());
    }

    #[test]
    fn files_are_trimmed_and_empty_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  abc\n").unwrap();
        let key = LoadedKey::load("k", &KeySource::File(path.clone())).unwrap();
        assert_eq!(key.expose(), "abc");
        std::fs::write(&path, "\n").unwrap();
        let err = LoadedKey::load("k", &KeySource::File(path)).unwrap_err();
        assert!(matches!(err, KeyError::FileEmpty { .. }));
        let err = LoadedKey::load("k", &KeySource::File(dir.path().join("absent"))).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    fn spec(path: &std::path::Path) -> KeySpec {
        KeySpec {
            name: "k".into(),
            source: KeySource::File(path.to_owned()),
            scopes: ScopeSet::default(),
            limit: None,
            budget: None,
            max_in_flight: None,
        }
    }

    #[test]
    fn a_failed_read_makes_the_key_stale_until_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc").unwrap();
        let store = KeyStore::load(&[spec(&path)], None).unwrap();
        let slot = store.slot(0).unwrap();
        assert_eq!(slot.state(), KeyState::Loaded);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(slot.refresh(), Refresh::Failed(_)));
        assert_eq!(slot.state(), KeyState::Stale);
        assert_eq!(slot.current().unwrap().expose(), "abc", "the previous key stays in use");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(slot.refresh(), Refresh::Unchanged);
        assert_eq!(slot.state(), KeyState::Loaded);
    }

    #[test]
    fn a_reload_keeps_a_rejection_while_the_key_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc").unwrap();
        let first = KeyStore::load(&[spec(&path)], None).unwrap();
        for _ in 0..REJECTED_AFTER {
            first.slot(0).unwrap().record_unauthorized();
        }
        assert_eq!(first.slot(0).unwrap().state(), KeyState::Rejected);
        let same = KeyStore::load(&[spec(&path)], Some(&first)).unwrap();
        assert_eq!(same.slot(0).unwrap().state(), KeyState::Rejected);
        std::fs::write(&path, "new").unwrap();
        let rotated = KeyStore::load(&[spec(&path)], Some(&same)).unwrap();
        assert_eq!(rotated.slot(0).unwrap().state(), KeyState::Loaded, "a new key has not been refused yet");
    }

    #[test]
    fn control_characters_are_refused_without_echoing_the_key() {
        let err = LoadedKey::new("k", &KeySource::Env("X".into()), "bad\u{1}secret").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
