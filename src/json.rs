//! Small JSON helpers on the hot path: an object writer that splices stored client JSON verbatim
//! (it was validated when it came in) and a nesting-depth scanner run before any parse.

use crate::domain::{Id, Micros, format_timestamp};

/// Writes one JSON object into a byte buffer, field by field.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> ObjectWriter<'a> {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, key);
        self.out.push(b':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_str(out, value);
        self
    }

    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    pub fn id(&mut self, key: &str, id: Id) -> &mut Self {
        let out = self.key(key);
        out.push(b'"');
        out.extend_from_slice(id.to_string().as_bytes());
        out.push(b'"');
        self
    }

    pub fn opt_id(&mut self, key: &str, id: Option<Id>) -> &mut Self {
        match id {
            Some(id) => self.id(key, id),
            None => self.null(key),
        }
    }

    pub fn ids(&mut self, key: &str, ids: &[Id]) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(id.to_string().as_bytes());
            out.push(b'"');
        }
        out.push(b']');
        self
    }

    pub fn strs(&mut self, key: &str, values: &[String]) -> &mut Self {
        let out = self.key(key);
        out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, v);
        }
        out.push(b']');
        self
    }

    pub fn timestamp(&mut self, key: &str, micros: Micros) -> &mut Self {
        self.str(key, &format_timestamp(micros))
    }

    pub fn opt_timestamp(&mut self, key: &str, micros: Option<Micros>) -> &mut Self {
        match micros {
            Some(m) => self.timestamp(key, m),
            None => self.null(key),
        }
    }

    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        let out = self.key(key);
        out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    pub fn f64(&mut self, key: &str, value: f64) -> &mut Self {
        let out = self.key(key);
        match serde_json::to_vec(&value) {
            Ok(text) => out.extend_from_slice(&text),
            Err(_) => out.extend_from_slice(b"null"),
        }
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        let out = self.key(key);
        out.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key).extend_from_slice(b"null");
        self
    }

    /// Splices JSON text that is already known to be valid (it was parsed when it came in).
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key).extend_from_slice(json.as_bytes());
        self
    }

    pub fn opt_raw(&mut self, key: &str, json: Option<&str>) -> &mut Self {
        match json {
            Some(j) => self.raw(key, j),
            None => self.null(key),
        }
    }

    /// A nested object, written by `fill`.
    pub fn object(&mut self, key: &str, fill: impl FnOnce(&mut ObjectWriter<'_>)) -> &mut Self {
        let out = self.key(key);
        let mut inner = ObjectWriter::new(out);
        fill(&mut inner);
        inner.finish();
        self
    }

    /// A nested array of pre-encoded JSON values.
    pub fn raw_array<'i>(
        &mut self,
        key: &str,
        items: impl IntoIterator<Item = &'i [u8]>,
    ) -> &mut Self {
        let out = self.key(key);
        write_raw_array(out, items);
        self
    }

    pub fn finish(&mut self) {
        self.out.push(b'}');
    }
}

/// Writes `[a,b,…]` from pre-encoded JSON values.
pub fn write_raw_array<'i>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'i [u8]>) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
}

/// Writes a JSON string literal, escaped.
pub fn write_str(out: &mut Vec<u8>, value: &str) {
    // serde_json's escaping of a &str cannot fail when writing into a Vec.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Writes `text` (the bytes of UTF-8 text, which stays valid) as a JSON string: `"`, `\\` and
/// control characters escaped as serde_json escapes them, every other byte copied as it is. What `write_str` does, for a long text with many quotes
/// (JSON put inside a string) at a fraction of its cost: eight bytes are tested at a time.
pub fn write_text(out: &mut Vec<u8>, text: &[u8]) {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte's high bit is set in `below(x, n)` when it is below `n` (and not above 0x7f); the
    // lowest one set is exact, as a borrow only ever carries into higher bytes.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x;
    out.reserve(text.len() + text.len() / 4 + 2);
    out.push(b'"');
    let mut at = 0;
    while at + 8 <= text.len() {
        let bytes: [u8; 8] = text[at..at + 8].try_into().expect("eight bytes");
        let word = u64::from_le_bytes(bytes);
        let flags =
            (below(word, 0x20) | below(word ^ (ONES * 0x22), 1) | below(word ^ (ONES * 0x5c), 1))
                & HIGHS;
        // The eight bytes are copied whole (one store), then cut back before an escaped one.
        out.extend_from_slice(&bytes);
        if flags == 0 {
            at += 8;
            continue;
        }
        let plain = (flags.trailing_zeros() / 8) as usize;
        out.truncate(out.len() - 8 + plain);
        escape(out, text[at + plain]);
        at += plain + 1;
    }
    for &b in &text[at..] {
        if ESCAPED[usize::from(b)] {
            escape(out, b);
        } else {
            out.push(b);
        }
    }
    out.push(b'"');
}

/// One byte of `ESCAPED`, escaped as serde_json escapes it.
fn escape(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let (high, low) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', high, low]);
        }
    }
}

/// The bytes a JSON string cannot hold as they are.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Builds one object into a fresh buffer.
pub fn object(fill: impl FnOnce(&mut ObjectWriter<'_>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut w = ObjectWriter::new(&mut out);
    fill(&mut w);
    w.finish();
    out
}

/// Builds one object into a fresh string.
pub fn object_string(fill: impl FnOnce(&mut ObjectWriter<'_>)) -> String {
    String::from_utf8(object(fill)).expect("the object writer writes only UTF-8")
}

/// The byte offset of the first `\uXXXX` escape in JSON `text` that is half a UTF-16 surrogate
/// pair (a high one not followed by a low one, or a low one alone), if any. serde_json refuses
/// them in the strings it decodes, but keeps a raw field's text as it came; stored, such text is
/// not Unicode, and every reader that decodes it fails. Backslashes occur only in strings in
/// valid JSON, so each one starts an escape.
pub fn lone_surrogate(text: &[u8]) -> Option<usize> {
    let hex = |at: usize| -> Option<u16> {
        let digits = text.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut i = 0;
    while i < text.len() {
        if text[i] != b'\\' {
            i += 1;
            continue;
        }
        if text.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(unit) = hex(i + 2) else {
            // Not an escape serde_json accepts: it reports it.
            i += 2;
            continue;
        };
        match unit {
            0xD800..=0xDBFF => {
                let low = (text.get(i + 6..i + 8) == Some(b"\\u".as_slice()))
                    .then(|| hex(i + 8))
                    .flatten();
                if !matches!(low, Some(0xDC00..=0xDFFF)) {
                    return Some(i);
                }
                i += 12;
            }
            0xDC00..=0xDFFF => return Some(i),
            _ => i += 6,
        }
    }
    None
}

/// The deepest nesting of arrays and objects in `text`, stopping early once past `limit`.
/// Brackets inside strings do not count. Malformed text is left for the parser to reject.
pub fn nesting_depth(text: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut at = 0;
    while at < text.len() {
        match text[at] {
            // A string: skipped to its closing quote a run of plain bytes at a time.
            b'"' => {
                at += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &text[at..]) {
                        None => return max,
                        Some(i) if text[at + i] == b'\\' => at += i + 2,
                        Some(i) => {
                            at += i + 1;
                            break;
                        }
                    }
                    if at >= text.len() {
                        return max;
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if max > limit {
                        return max;
                    }
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    max
}

#[cfg(test)]
mod tests {

    #[test]
    fn lone_surrogates_are_found_and_pairs_and_escaped_backslashes_are_not() {
        let found = |t: &str| lone_surrogate(t.as_bytes());
        assert_eq!(found(r#"{"a":"\ud83d\ude00"}"#), None, "a pair");
        assert_eq!(
            found(r#"{"a":"\u00e9 \n \\ud800"}"#),
            None,
            "an escaped backslash"
        );
        assert_eq!(found(r#"{"a":"x\ud800"}"#), Some(7), "a high one alone");
        assert_eq!(
            found(r#"{"a":"\ud800\u0041"}"#),
            Some(6),
            "a high one before another"
        );
        assert_eq!(found(r#"{"a":"\uDC00"}"#), Some(6), "a low one alone");
        assert_eq!(found(r#"{"a":"\ud800"#), Some(6), "cut short");
    }
    use super::*;

    #[test]
    fn writes_valid_json_with_spliced_values() {
        let text = object(|o| {
            o.str("name", "a \"quoted\" name\n")
                .raw("content", r#"{"k":[1,2]}"#)
                .opt_str("none", None)
                .u64("n", 42)
                .bool("ok", true)
                .strs("options", &["x".into(), "y".into()])
                .object("inner", |i| {
                    i.f64("pct", 12.5);
                });
        });
        let parsed: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(parsed["name"], "a \"quoted\" name\n");
        assert_eq!(parsed["content"]["k"][1], 2);
        assert!(parsed["none"].is_null());
        assert_eq!(parsed["n"], 42);
        assert_eq!(parsed["options"][1], "y");
        assert_eq!(parsed["inner"]["pct"], 12.5);
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":"[[[[{{{"}"#, 64), 1);
        assert_eq!(nesting_depth(br#"[[["\"[" ]]]"#, 64), 3);
        assert_eq!(nesting_depth(b"1", 64), 0);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(nesting_depth(deep.as_bytes(), 64) > 64);
        // A string left open, and a backslash as the last byte.
        assert_eq!(nesting_depth(br#"[{"a":"[["#, 64), 2);
        assert_eq!(nesting_depth(b"[\"\\", 64), 1);
    }

    /// The byte-at-a-time reading the skipping one must agree with.
    fn depth_by_bytes(text: &[u8], limit: usize) -> usize {
        let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
        for &b in text {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    max = max.max(depth);
                    if max > limit {
                        return max;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn text_is_escaped_as_json_reads_it_back() {
        for text in [
            "",
            "plain",
            "{\"a\":\"b\\\\c\"}",
            "line\nbreak\r\ttab\u{1}\u{1f}",
            "é ✓ 😀",
        ] {
            let mut out = Vec::new();
            super::write_text(&mut out, text.as_bytes());
            assert_eq!(serde_json::from_slice::<String>(&out).unwrap(), text);
            let mut serde = Vec::new();
            super::write_str(&mut serde, text);
            assert_eq!(out, serde, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn text_escaping_agrees_with_serde_json(text in "\\PC*|[\"\\\\\\x00-\\x1f a]{0,40}") {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            super::write_text(&mut ours, text.as_bytes());
            super::write_str(&mut theirs, &text);
            proptest::prop_assert_eq!(ours, theirs);
        }

        #[test]
        fn depth_skipping_strings_agrees_with_reading_every_byte(
            text in proptest::collection::vec(proptest::sample::select(
                b"[]{}\"\\a:,".to_vec()), 0..200),
            limit in 1usize..8,
        ) {
            proptest::prop_assert_eq!(nesting_depth(&text, limit), depth_by_bytes(&text, limit));
        }
    }
}
