use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, UTC. Every stored timestamp uses this unit.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

/// RFC 3339, UTC, microsecond precision.
///
/// ```
/// use flightdeck::domain::format_timestamp;
/// assert_eq!(format_timestamp(1_795_801_417_123_456), "2026-11-27T17:43:37.123456Z");
/// ```
pub fn format_timestamp(micros: Micros) -> String {
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000) as u32;
    match chrono::DateTime::from_timestamp(secs, sub * 1000) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_microseconds_in_utc() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_timestamp(1_795_801_417_123_456),
            "2026-11-27T17:43:37.123456Z"
        );
    }
}
