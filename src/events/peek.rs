//! Reading an event frame's own fields back without parsing its JSON: what a client measuring
//! delivery needs (the bench driver, the benchmarks). The inverse of `events::encode` for `seq`
//! and `timestamp`.

/// Microseconds since the Unix epoch of the `"timestamp":"YYYY-MM-DDTHH:MM:SS.ffffffZ"` field of
/// an event frame, the moment its transaction committed. The frame's own field is its last one,
/// after any client JSON in `data`, so the last occurrence is taken.
pub fn frame_timestamp(frame: &str) -> Option<i64> {
    let at = frame.rfind("\"timestamp\":\"")? + 13;
    let t = frame.get(at..at + 27)?.as_bytes();
    if t[4] != b'-' || t[10] != b'T' || t[19] != b'.' || t[26] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        t[r].iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    Some(secs * 1_000_000 + num(20..26)?)
}

/// The `"seq":N` field of an event frame.
pub fn frame_seq(frame: &str) -> Option<u64> {
    let at = frame.find("\"seq\":")? + 6;
    let digits = frame[at..].bytes().take_while(u8::is_ascii_digit).count();
    frame[at..at + digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_fields() {
        let frame = r#"{"seq":1234,"event_type":"task_created","data":{"seq":9},"timestamp":"2026-11-27T20:18:07.123456Z"}"#;
        assert_eq!(frame_seq(frame), Some(1234));
        // 2026-11-27T00:00:00Z is 1_795_737_600 s after the epoch.
        let expected = (1_795_737_600 + 20 * 3600 + 18 * 60 + 7) * 1_000_000 + 123_456;
        assert_eq!(frame_timestamp(frame), Some(expected));
        assert_eq!(frame_timestamp(r#"{"timestamp":"2026-11-27"}"#), None);
        assert_eq!(
            frame_timestamp(r#"{"timestamp":"2026-11-27T20:18:07.12345xZ"}"#),
            None
        );
        // The formatter and the parser agree.
        let now = crate::domain::now_micros();
        let text = format!(
            "{{\"timestamp\":\"{}\"}}",
            crate::domain::format_timestamp(now)
        );
        assert_eq!(frame_timestamp(&text), Some(now));
    }
}
