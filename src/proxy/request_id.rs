//! Request ids: the caller's `X-Request-Id` when well formed, else a new one,
//! sent upstream and returned to the caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};

use crate::forward::X_REQUEST_ID;

/// The caller's `X-Request-Id` when well formed (1 to 128 of `A-Za-z0-9._-`), else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        let well_formed = (1..=128).contains(&bytes.len())
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if well_formed {
            return value.clone();
        }
    }
    new_request_id()
}

/// A process-unique id: a random per-process prefix and a counter, cheap and never repeated.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 6];
        // Uniqueness comes from the counter; a failed random read only makes
        // ids of two processes easier to confuse.
        let _ = getrandom::fill(&mut bytes);
        hex::encode(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // `{prefix}-{n:08x}`, without `core::fmt` (a tenth of the handler's own work).
    let mut digits = [0u8; 16];
    let _ = hex::encode_to_slice(n.to_be_bytes(), &mut digits);
    let first = digits.iter().take(8).position(|&d| d != b'0').unwrap_or(8);
    // Exactly its length: `Bytes` takes a full `Vec` over without allocating.
    let mut id = Vec::with_capacity(prefix.len() + 1 + digits.len() - first);
    id.extend_from_slice(prefix.as_bytes());
    id.push(b'-');
    id.extend_from_slice(&digits[first..]);
    // Handed over, not copied (`from_str` would copy it into a new buffer).
    HeaderValue::from_maybe_shared(bytes::Bytes::from(id)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_well_formed() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc.DEF_1-2"));
        assert_eq!(request_id(&h), "abc.DEF_1-2");
        for bad in ["", "a b", "a/b", "ü"] {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                h.insert(&X_REQUEST_ID, v);
            }
            assert_ne!(request_id(&h).as_bytes(), bad.as_bytes());
        }
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_str(&"a".repeat(129)).unwrap());
        assert_eq!(request_id(&h).len(), 21);
        assert_ne!(new_request_id(), new_request_id());
        let id = new_request_id();
        let (prefix, n) = id.to_str().unwrap().split_once('-').unwrap();
        assert_eq!((prefix.len(), n.len()), (12, 8), "{id:?}");
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    }
}
