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
    ///
    /// # Errors
    /// A one-line reason when an escape decodes to bytes that are not
    /// UTF-8: such a name is refused, never altered (`a%FFb` and `a%FEb`
    /// would otherwise name the same lock).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (path, raw_query) = url.split_once('?').unwrap_or((url, ""));
        let segments = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode(s, false))
            .collect::<Result<_, _>>()?;
        let query = raw_query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((percent_decode(key, true)?, percent_decode(value, true)?))
            })
            .collect::<Result<_, String>>()?;
        Ok(Target {
            segments,
            raw_query: raw_query.to_string(),
            query,
        })
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

/// Decodes `%XX` escapes (and `+` as space in a query).
///
/// # Errors
/// A one-line reason when the decoded bytes are not UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, String> {
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
    String::from_utf8(out).map_err(|_| {
        let shown: String = text.chars().take(80).collect();
        format!("{shown:?} does not decode to UTF-8")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths_and_queries() {
        let t = Target::parse("/api/v1/locks/a%2Fb?sessid=12&name=x+y&flag").unwrap();
        assert_eq!(t.path(), vec!["api", "v1", "locks", "a/b"]);
        assert_eq!(t.param("sessid"), Some("12"));
        assert_eq!(t.param("name"), Some("x y"));
        assert_eq!(t.param("flag"), Some(""));
        assert_eq!(t.raw_query, "sessid=12&name=x+y&flag");
        assert_eq!(Target::parse("/").unwrap().segments.len(), 0);
        let t = Target::parse("/api/v1/locks/%C3%A9t%C3%A9?name=%E2%9C%93").unwrap();
        assert_eq!(t.path()[3], "été");
        assert_eq!(t.param("name"), Some("✓"));
    }

    #[test]
    fn bad_escapes_are_kept() {
        assert_eq!(percent_decode("%zz%4", false).unwrap(), "%zz%4");
        assert_eq!(percent_decode("%41%", false).unwrap(), "A%");
    }

    #[test]
    fn names_that_do_not_decode_to_utf8_are_refused() {
        for bad in ["a%FFb", "a%FEb", "a%C0b", "%ff", "%C3"] {
            assert!(percent_decode(bad, false).is_err(), "{bad}");
            assert!(
                Target::parse(&format!("/api/v1/locks/{bad}")).is_err(),
                "{bad}"
            );
            assert!(Target::parse(&format!("/?name={bad}")).is_err(), "{bad}");
        }
    }
}
