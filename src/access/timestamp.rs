//! The access line's timestamp, as tracing-subscriber's `Rfc3339Micros`
//! writes it, at a fraction of the cost.

use std::time::SystemTime;

/// An RFC 3339 timestamp with microseconds, as `Rfc3339Micros` writes it
/// (`2026-11-27T23:46:05.549290Z`). The date and time to the second are
/// formatted once a second per thread; each line adds only its microseconds.
pub(super) struct Timestamp {
    text: [u8; 27],
}

impl Timestamp {
    pub(super) fn now() -> Self {
        Self::at(SystemTime::now())
    }

    fn at(when: SystemTime) -> Self {
        thread_local! {
            static SECOND: std::cell::Cell<(u64, [u8; 20])> = const { std::cell::Cell::new((u64::MAX, [0; 20])) };
        }
        let since = when.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let (secs, micros) = (since.as_secs(), since.subsec_micros());
        let mut text = [0u8; 27];
        let (cached, prefix) = SECOND.with(std::cell::Cell::get);
        let prefix = if cached == secs {
            prefix
        } else {
            let mut fresh = [0u8; 20];
            let full = humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
            let full = full.to_string();
            // `2026-11-27T23:46:05Z`: keep up to the seconds.
            let n = full.len().min(19);
            fresh[..n].copy_from_slice(&full.as_bytes()[..n]);
            fresh[19] = b'.';
            SECOND.with(|c| c.set((secs, fresh)));
            fresh
        };
        text[..20].copy_from_slice(&prefix);
        let mut digits = micros;
        for i in (20..26).rev() {
            text[i] = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
        text[26] = b'Z';
        Self { text }
    }

    pub(super) fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation were written.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_humantime_writes_them() {
        let base = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_795_000_000_123_456);
        for offset_us in [0u64, 1, 999_999, 1_000_000, 86_400_000_007] {
            let when = base + std::time::Duration::from_micros(offset_us);
            assert_eq!(Timestamp::at(when).as_str(), humantime::format_rfc3339_micros(when).to_string());
        }
    }
}
