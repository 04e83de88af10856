//! The parts of a request the handlers need: method, decoded path
//! segments, query parameters, and the raw query for redirects.

use std::collections::BTreeMap;

/// A parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Percent-decoded path segments, without empty ones.
    pub segments: Vec<String>,
    /// The raw query string (without `?`), kept for redirects.
    pub raw_query: String,
    pub query: BTreeMap<String, String>,
}

impl Target {
    /// Parses `/a/b?x=1&y=2`. Invalid percent escapes are kept literally.
    pub fn parse(url: &str) -> Target {
        let (path, raw_query) = url.split_once('?').unwrap_or((url, ""));
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect();
        let query = raw_query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key, true), percent_decode(value, true))
            })
            .collect();
        Target {
            segments,
            raw_query: raw_query.to_string(),
            query,
        }
    }

    pub fn path(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }

    /// The path and query again, for a redirect.
    pub fn path_and_query(url: &str) -> &str {
        if url.starts_with('/') { url } else { "/" }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as space in a query); invalid UTF-8
/// becomes U+FFFD.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_queries() {
        let t = Target::parse("/api/v1/locks/a%2Fb?sessid=12&name=x+y&flag");
        assert_eq!(t.path(), vec!["api", "v1", "locks", "a/b"]);
        assert_eq!(t.param("sessid"), Some("12"));
        assert_eq!(t.param("name"), Some("x y"));
        assert_eq!(t.param("flag"), Some(""));
        assert_eq!(t.raw_query, "sessid=12&name=x+y&flag");
        assert_eq!(Target::parse("/").segments.len(), 0);
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(percent_decode("%zz%4", false), "%zz%4");
        assert_eq!(percent_decode("%41%", false), "A%");
        assert_eq!(percent_decode("%ff", false), "\u{fffd}");
    }
}
