//! `POST /`: IDs from the leader's pool, `?count=N` for a block.

use std::time::Duration;

use tiny_http::Method;

use super::Context;
use super::request::Target;
use super::respond::{self, Answer};
use crate::ids::TakeError;
use crate::node::{Input, NodeError};

/// The most IDs one request may take.
pub const COUNT_MAX: u64 = 100_000;

pub fn handle(method: &Method, target: &Target, url: &str, context: &Context) -> Answer {
    if *method != Method::Post {
        return super::wrong_method(method, "POST");
    }
    let count = match parse_count(target.param("count")) {
        Ok(count) => count,
        Err(why) => return respond::error(400, &why),
    };
    if let Some(answer) = super::not_here(context, context.options.id_redirect, url) {
        return answer;
    }
    let wake = || {
        let _ = context.node.send(Input::WakeIds);
    };
    match context
        .node
        .shared
        .ids
        .take(count, Duration::from_secs(5), &wake)
    {
        Ok((first, last)) => respond::text(200, render(first, last)),
        Err(TakeError::NotServing) => respond::leader_unavailable(),
        // A refill that cannot be written is a full disk, as for any write.
        Err(TakeError::TimedOut) if context.node.shared.status().storage_full => {
            respond::node_error(&NodeError::StorageFull, 307, url)
        }
        Err(TakeError::TimedOut) => respond::unavailable("no IDs reserved in time; retry"),
    }
}

fn parse_count(raw: Option<&str>) -> Result<u64, String> {
    let Some(raw) = raw else {
        return Ok(1);
    };
    match raw.parse::<u64>() {
        Ok(n) if (1..=COUNT_MAX).contains(&n) => Ok(n),
        _ => Err(format!(
            "count must be an integer from 1 to {COUNT_MAX}, not {raw:?}"
        )),
    }
}

/// One ID per line, ascending: the body of `POST /`.
pub fn render(first: u64, last: u64) -> String {
    let mut out = String::with_capacity(((last - first + 1) * 12) as usize);
    let mut buffer = itoa_buffer();
    for id in first..=last {
        out.push_str(format_u64(&mut buffer, id));
        out.push('\n');
    }
    out
}

fn itoa_buffer() -> [u8; 20] {
    [0u8; 20]
}

/// Formats without `format!`: `?count=100000` renders 100k numbers.
fn format_u64(buffer: &mut [u8; 20], mut value: u64) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_validated() {
        assert_eq!(parse_count(None), Ok(1));
        assert_eq!(parse_count(Some("100000")), Ok(100_000));
        assert!(parse_count(Some("0")).is_err());
        assert!(parse_count(Some("100001")).is_err());
        assert!(parse_count(Some("-1")).is_err());
        assert!(parse_count(Some("x")).is_err());
    }

    #[test]
    fn renders_one_per_line() {
        assert_eq!(render(9, 11), "9\n10\n11\n");
        assert_eq!(render(u64::MAX, u64::MAX), format!("{}\n", u64::MAX));
    }
}
