//! Time, injectable.
//!
//! Everything that depends on "now" (expiry of approvals, sessions and tokens, rate-limit
//! windows, event timestamps) asks a [`Clock`], so tests can move time forward instead
//! of sleeping.

use chrono::{DateTime, SecondsFormat, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of the current time.
#[derive(Clone, Default)]
pub struct Clock {
    /// Added to the system time; moved by tests through [`Clock::advance`].
    offset_micros: Arc<AtomicI64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::microseconds(self.offset_micros.load(Ordering::Relaxed))
    }

    /// Moves this clock (and every clone of it) forward. For tests and simulations.
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_micros.fetch_add(by.num_microseconds().unwrap_or(i64::MAX), Ordering::Relaxed);
    }
}

/// The one textual form of a timestamp: RFC 3339, UTC, microseconds, `Z`. Fixed width,
/// so that text order is time order in every store.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses any RFC 3339 timestamp into UTC.
pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let t = parse_ts("2026-05-20T21:30:00+02:00").unwrap();
        assert_eq!(format_ts(t), "2026-05-20T19:30:00.000000Z");
    }

    #[test]
    fn advancing_moves_every_clone() {
        let c = Clock::system();
        let d = c.clone();
        let before = d.now();
        c.advance(chrono::Duration::hours(1));
        assert!(d.now() - before >= chrono::Duration::minutes(59));
    }
}
