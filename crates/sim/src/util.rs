//! Small self-contained helpers: deterministic hashing for generation, GUID
//! formatting, a tiny JSON writer for the hot serialization path, timestamps
//! without a date library, URL decoding and opaque token encoding.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// SplitMix64: tiny, fast and, unlike `rand`'s `StdRng`, guaranteed to give
/// the same stream forever, so a (users, seed) pair always yields the same
/// tenant across library upgrades.
#[derive(Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, stream: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ mix(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mix(index)));
        r.next();
        r
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_mille / 1000`.
    pub(crate) fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    pub(crate) fn guid(&mut self) -> uuid::Uuid {
        let a = self.next().to_le_bytes();
        let b = self.next().to_le_bytes();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a);
        bytes[8..].copy_from_slice(&b);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over lower-cased ASCII; used to index user principal names.
pub(crate) fn hash_lower(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

pub(crate) fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2024-05-01T12:34:56` plus `suffix` (Graph uses "" in innerError.date and
/// "Z" in entity timestamps).
pub(crate) fn iso_time(unix: u64, suffix: &str) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{suffix}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The identity platform's `timestamp` format: `2024-05-01 12:34:56Z`.
pub(crate) fn aad_time(unix: u64) -> String {
    iso_time(unix, "Z").replacen('T', " ", 1)
}

/// Decodes one application/x-www-form-urlencoded component.
pub(crate) fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(a), Some(b)) => {
                        out.push((a * 16 + b) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a raw query string into decoded (name, value) pairs.
pub(crate) fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}

/// Percent-encodes a value for use inside a query string.
#[cfg(test)]
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        buf.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(buf, "\\u{b:04x}");
        } else {
            buf.push_str(esc);
        }
        start = i + 1;
    }
    buf.push_str(&s[start..]);
    buf.push('"');
}

/// Streams one JSON object into a shared buffer; the hot path for pages of
/// 999 users, where building `serde_json::Value` trees would dominate.
pub(crate) struct Obj<'a> {
    buf: &'a mut String,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn start(buf: &'a mut String) -> Obj<'a> {
        buf.push('{');
        Obj { buf, first: true }
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        push_json_str(self.buf, k);
        self.buf.push(':');
    }
    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        push_json_str(self.buf, v);
    }
    pub(crate) fn opt_str(&mut self, k: &str, v: Option<&str>) {
        self.key(k);
        match v {
            Some(v) => push_json_str(self.buf, v),
            None => self.buf.push_str("null"),
        }
    }
    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.buf.push_str(if v { "true" } else { "false" });
    }
    pub(crate) fn null(&mut self, k: &str) {
        self.key(k);
        self.buf.push_str("null");
    }
    pub(crate) fn num(&mut self, k: &str, v: i64) {
        self.key(k);
        let _ = write!(self.buf, "{v}");
    }
    pub(crate) fn strs<S: AsRef<str>>(&mut self, k: &str, v: &[S]) {
        self.key(k);
        self.buf.push('[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            push_json_str(self.buf, s.as_ref());
        }
        self.buf.push(']');
    }
    /// Writes an already-serialized JSON value.
    pub(crate) fn raw(&mut self, k: &str, json: &str) {
        self.key(k);
        self.buf.push_str(json);
    }
    /// Opens a nested value; the caller writes it into the returned buffer.
    pub(crate) fn nested(&mut self, k: &str) -> &mut String {
        self.key(k);
        self.buf
    }
    pub(crate) fn end(self) {
        self.buf.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso_time(0, ""), "1970-01-01T00:00:00");
        assert_eq!(iso_time(1_709_251_199, "Z"), "2024-02-29T23:59:59Z");
        assert_eq!(aad_time(1_700_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn query_decoding() {
        let q = parse_query("$select=id%2Cmail&$top=5&x=a+b&flag");
        assert_eq!(q[0], ("$select".into(), "id,mail".into()));
        assert_eq!(q[2].1, "a b");
        assert_eq!(q[3], ("flag".into(), String::new()));
        assert_eq!(url_decode("%zz%4"), "%zz%4");
        assert_eq!(url_decode(&url_encode("a b/é~")), "a b/é~");
    }
}
