//! What two reads are compared by: the exact bytes of everything that makes
//! their answers the same, so two reads share only if they are equal in
//! full (a hash alone could collide and hand one caller another's answer).

use std::sync::Arc;

/// A read's identity, compared byte for byte.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ReadKey(Arc<[u8]>);

impl std::fmt::Debug for ReadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Its bytes may hold variables a caller considers private.
        write!(f, "ReadKey({} bytes)", self.0.len())
    }
}

impl ReadKey {
    /// Starts a key.
    pub fn builder() -> KeyBuilder {
        KeyBuilder(Vec::with_capacity(256))
    }

    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, once built with a field).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Builds a `ReadKey` from fields; each is length-prefixed, so no two
/// different field sequences give the same bytes.
#[derive(Debug)]
pub struct KeyBuilder(Vec<u8>);

impl KeyBuilder {
    /// Adds one field.
    pub fn field(mut self, bytes: impl AsRef<[u8]>) -> Self {
        let bytes = bytes.as_ref();
        self.0.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// Adds one field made of `values` joined by `,` (a repeated header's
    /// values, as one list), without joining them anywhere first.
    pub fn joined<'a, I: Iterator<Item = &'a [u8]>>(mut self, values: impl Fn() -> I) -> Self {
        let len = values().enumerate().map(|(i, v)| v.len() + usize::from(i > 0)).sum::<usize>();
        self.0.extend_from_slice(&(len as u64).to_le_bytes());
        for (i, value) in values().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.0.extend_from_slice(value);
        }
        self
    }

    /// Adds an optional field, told apart from an empty one.
    pub fn optional(self, bytes: Option<impl AsRef<[u8]>>) -> Self {
        match bytes {
            Some(bytes) => self.field([1]).field(bytes),
            None => self.field([0]),
        }
    }

    /// The key.
    pub fn build(self) -> ReadKey {
        ReadKey(self.0.into())
    }
}
