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

mod store;
mod watch;

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use store::{KeyState, KeyStore};

pub use watch::{watch, Watched};

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

/// Why a file could not be read, and what to do, in an operator's words
/// (not the OS's: "entity not found", "os error 13").
pub fn unreadable(e: &std::io::Error) -> String {
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

    /// Its four bytes (what a shared read's key holds; never the secret).
    pub fn bytes(self) -> [u8; 4] {
        self.0
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

#[cfg(test)]
mod tests {
    use super::store::{Refresh, REJECTED_AFTER};
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

    fn spec(path: &std::path::Path) -> (&'static str, KeySource) {
        ("k", KeySource::File(path.to_owned()))
    }

    fn load(spec: &(&'static str, KeySource), previous: Option<&KeyStore>) -> KeyStore {
        KeyStore::load([(spec.0, &spec.1)], previous).unwrap()
    }

    #[test]
    fn a_failed_read_makes_the_key_stale_until_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "abc").unwrap();
        let store = load(&spec(&path), None);
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
        let first = load(&spec(&path), None);
        for _ in 0..REJECTED_AFTER {
            first.slot(0).unwrap().record_unauthorized();
        }
        assert_eq!(first.slot(0).unwrap().state(), KeyState::Rejected);
        let same = load(&spec(&path), Some(&first));
        assert_eq!(same.slot(0).unwrap().state(), KeyState::Rejected);
        std::fs::write(&path, "new").unwrap();
        let rotated = load(&spec(&path), Some(&same));
        assert_eq!(rotated.slot(0).unwrap().state(), KeyState::Loaded, "a new key has not been refused yet");
    }

    #[test]
    fn control_characters_are_refused_without_echoing_the_key() {
        let err = LoadedKey::new("k", &KeySource::Env("X".into()), "bad\u{1}secret").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
