//! Secrets read from files: bearer tokens (`--admin_token`,
//! `--client_token`) and, later, the peer secret. A file holds one value,
//! or two on separate lines while a rotation is under way: a node
//! presents the first and accepts either, so a rolling restart can move a
//! cluster from the old value to the new one without downtime. Values
//! are compared in constant time. Secrets are never taken from the
//! command line, where `ps` shows them to every user.

use std::fmt;
use std::path::Path;

use subtle::ConstantTimeEq;

/// The shortest value accepted: 16 bytes of a random token (e.g.
/// `openssl rand -hex 16`) leave nothing to guess.
pub const SECRET_BYTES_MIN: usize = 16;
/// A token file is small; anything larger is the wrong file.
const SECRET_FILE_BYTES_MAX: u64 = 4096;

/// One or two accepted values; the first is the one to present.
#[derive(Clone)]
pub struct Secret {
    values: Vec<Vec<u8>>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} value(s), redacted)", self.values.len())
    }
}

impl Secret {
    /// Reads `path`.
    ///
    /// # Errors
    /// A one-line reason naming the file: unreadable, too large, empty,
    /// more than two values, or a value shorter than `min_bytes`.
    pub fn from_file(path: &Path, min_bytes: usize) -> Result<Secret, String> {
        let shown = path.display();
        let size = std::fs::metadata(path)
            .map_err(|e| format!("{shown}: {e}"))?
            .len();
        if size > SECRET_FILE_BYTES_MAX {
            return Err(format!(
                "{shown}: {size} bytes; a secret file holds one or two lines"
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        Secret::parse(&text, min_bytes).map_err(|why| format!("{shown}: {why}"))
    }

    /// Parses the file's text: one value per non-empty line, surrounding
    /// whitespace ignored.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn parse(text: &str, min_bytes: usize) -> Result<Secret, String> {
        let values: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| line.as_bytes().to_vec())
            .collect();
        match values.len() {
            0 => return Err("empty; it must hold a secret".into()),
            1 | 2 => {}
            n => {
                return Err(format!(
                    "{n} values; at most two (the new one first, the old one during a rotation)"
                ));
            }
        }
        if let Some(short) = values.iter().find(|v| v.len() < min_bytes) {
            return Err(format!(
                "a value of {} bytes; at least {min_bytes} are needed",
                short.len()
            ));
        }
        if values
            .iter()
            .any(|v| v.iter().any(|b| b.is_ascii_whitespace()))
        {
            return Err("a value holds whitespace".into());
        }
        Ok(Secret { values })
    }

    /// The value to present (the first line).
    pub fn current(&self) -> &[u8] {
        self.values.first().map_or(&[], Vec::as_slice)
    }

    /// Every accepted value, the current one first.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.values.iter().map(Vec::as_slice)
    }

    /// Whether `given` is one of the accepted values, compared in
    /// constant time (only the lengths may show).
    pub fn accepts(&self, given: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0u8);
        for value in &self.values {
            ok |= value.as_slice().ct_eq(given);
        }
        bool::from(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123";
    const B: &str = "fedcba9876543210fedc";

    #[test]
    fn one_or_two_values_and_either_is_accepted() {
        let one = Secret::parse(&format!("{A}\n"), 16).unwrap();
        assert!(one.accepts(A.as_bytes()));
        assert!(!one.accepts(B.as_bytes()));
        assert!(!one.accepts(&A.as_bytes()[..19]));
        assert!(!one.accepts(b""));
        assert_eq!(one.current(), A.as_bytes());
        let two = Secret::parse(&format!("  {B}\r\n\n{A}\n"), 16).unwrap();
        assert!(two.accepts(A.as_bytes()) && two.accepts(B.as_bytes()));
        assert_eq!(two.current(), B.as_bytes());
        assert!(!format!("{two:?}").contains(A));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        assert!(Secret::parse("", 16).unwrap_err().contains("empty"));
        assert!(Secret::parse("\n \n", 16).unwrap_err().contains("empty"));
        assert!(
            Secret::parse("short", 16)
                .unwrap_err()
                .contains("at least 16")
        );
        let three = format!("{A}\n{B}\n{A}x\n");
        assert!(
            Secret::parse(&three, 16)
                .unwrap_err()
                .contains("at most two")
        );
        let spaced = "0123456789 abcdef0123";
        assert!(
            Secret::parse(spaced, 16)
                .unwrap_err()
                .contains("whitespace")
        );
        let missing = Secret::from_file(Path::new("/nonexistent/token"), 16);
        assert!(missing.unwrap_err().starts_with("/nonexistent/token: "));
    }
}
