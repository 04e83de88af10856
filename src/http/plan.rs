//! What an `/api/v1` request asks for, decided without touching the node:
//! the command to propose, the query to run, or the refusal to send.
//!
//! Owns: routing and parameter checks for turbosquid's API. May not touch:
//! the node, the network or the clock (that is `api.rs`, which carries a
//! [`Plan`] out). Being pure, it is fuzzed down to the proposed command
//! (`fuzz/fuzz_targets/http_requests.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use tiny_http::Method;

use super::request::Target;
use crate::ticket::{Command, SessionId};

/// The longest `?wait=` honoured.
pub const WAIT_MS_MAX: u64 = 30_000;
/// A session's TTL when none is given (turbosquid's default).
pub const TTL_MS_DEFAULT: u64 = 5_000;
/// The longest TTL accepted: a day.
pub const TTL_MS_MAX: u64 = 86_400_000;

/// One request's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Propose `command` (waiting up to `wait` for a lock or claim) and
    /// answer its outcome as `reply` says.
    Propose {
        command: Command,
        wait: Option<Duration>,
        reply: Reply,
    },
    /// Restart a session's TTL on the leader (no log entry).
    Refresh(SessionId),
    /// Read the leader's applied state.
    Read(Query),
    /// A known path with another method: 405 naming the allowed ones.
    WrongMethod(&'static str),
    /// Refused before reaching the node.
    Refuse { status: u16, why: String },
}

/// How a proposal's outcome is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `"Ok"`.
    Ok,
    /// `"ok"` (turbosquid's unlock).
    LowerOk,
    /// The new session's id.
    SessionId,
    /// Whether the claim was granted, with its ticket and fencing token.
    Claim,
    /// Whether the lock was granted, with its fencing token.
    Lock,
}

/// A read of the applied state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    Sessions,
    Resources(Option<String>),
    Session(SessionId),
    HasClaim {
        session: SessionId,
        resource: String,
        name: String,
    },
}

/// The metrics label of a path under `/api/v1`; `"unknown"` is a 404.
pub fn route_name(rest: &[&str]) -> &'static str {
    match rest {
        ["sessions"] => "sessions",
        ["sessions", _] => "session",
        ["tickets", _] => "tickets",
        ["claims", _] => "claims",
        ["locks", _] => "locks",
        ["dump", "sessions"] => "dump_sessions",
        ["dump", "resources"] | ["dump", "resources", _] => "dump_resources",
        _ => "unknown",
    }
}

/// Whether the request carries a body to read first (a ticket's data).
pub fn takes_body(method: &Method, rest: &[&str]) -> bool {
    matches!((rest, method), (["tickets", _], Method::Post))
}

/// Decides what a request under `/api/v1` asks for. `rest` is the path
/// after `/api/v1`, `body` the request body when [`takes_body`] says so
/// (empty otherwise), `remote` the client (a session's source).
pub fn plan(
    method: &Method,
    rest: &[&str],
    target: &Target,
    remote: Option<SocketAddr>,
    body: Vec<u8>,
) -> Plan {
    let params = Params(target);
    let result = match (rest, method) {
        (["sessions"], Method::Post) => open_session(&params, remote),
        (["sessions"], _) => Ok(Plan::WrongMethod("POST")),
        (["sessions", id], Method::Put) => session_id(id).map(Plan::Refresh),
        (["sessions", id], Method::Delete) => {
            session_id(id).map(|id| propose(Command::CloseSession { id }, Reply::Ok))
        }
        (["sessions", id], Method::Get) => session_id(id).map(|id| Plan::Read(Query::Session(id))),
        (["sessions", _], _) => Ok(Plan::WrongMethod("GET, PUT, DELETE")),
        (["tickets", resource], Method::Post) => {
            let (session, name) = (params.session(), params.name());
            session.and_then(|session| {
                name.map(|name| {
                    let resource = resource.to_string();
                    let data = body;
                    propose(
                        Command::IssueTicket {
                            session,
                            resource,
                            name,
                            data,
                        },
                        Reply::Ok,
                    )
                })
            })
        }
        (["tickets", resource], Method::Delete) => {
            session_and_name(&params).map(|(session, name)| {
                let resource = resource.to_string();
                propose(
                    Command::RevokeTicket {
                        session,
                        resource,
                        name,
                    },
                    Reply::Ok,
                )
            })
        }
        (["tickets", _], _) => Ok(Plan::WrongMethod("POST, DELETE")),
        (["claims", resource], Method::Post) => waiting(&params, |session| Command::Claim {
            session,
            resource: resource.to_string(),
        })
        .map(|(command, wait)| Plan::Propose {
            command,
            wait,
            reply: Reply::Claim,
        }),
        (["claims", resource], Method::Delete) => {
            session_and_name(&params).map(|(session, name)| {
                let resource = resource.to_string();
                propose(
                    Command::Release {
                        session,
                        resource,
                        name,
                    },
                    Reply::Ok,
                )
            })
        }
        (["claims", resource], Method::Get) => session_and_name(&params).map(|(session, name)| {
            let resource = resource.to_string();
            Plan::Read(Query::HasClaim {
                session,
                resource,
                name,
            })
        }),
        (["claims", _], _) => Ok(Plan::WrongMethod("GET, POST, DELETE")),
        (["locks", resource], Method::Post) => waiting(&params, |session| Command::Lock {
            session,
            resource: resource.to_string(),
        })
        .map(|(command, wait)| Plan::Propose {
            command,
            wait,
            reply: Reply::Lock,
        }),
        (["locks", resource], Method::Delete) => params.session().map(|session| {
            let resource = resource.to_string();
            propose(Command::Unlock { session, resource }, Reply::LowerOk)
        }),
        (["locks", _], _) => Ok(Plan::WrongMethod("POST, DELETE")),
        (["dump", "sessions"], Method::Get) => Ok(Plan::Read(Query::Sessions)),
        (["dump", "resources"], Method::Get) => Ok(Plan::Read(Query::Resources(None))),
        (["dump", "resources", name], Method::Get) => {
            Ok(Plan::Read(Query::Resources(Some(name.to_string()))))
        }
        (["dump", ..], _) => Ok(Plan::WrongMethod("GET")),
        _ => Err(refuse(404, "no such path".to_string())),
    };
    result.unwrap_or_else(|refusal| refusal)
}

fn propose(command: Command, reply: Reply) -> Plan {
    Plan::Propose {
        command,
        wait: None,
        reply,
    }
}

fn refuse(status: u16, why: String) -> Plan {
    Plan::Refuse { status, why }
}

fn open_session(params: &Params, remote: Option<SocketAddr>) -> Result<Plan, Plan> {
    let name = params.name()?;
    let ttl_ms = match params.0.param("ttl") {
        None | Some("") => TTL_MS_DEFAULT,
        Some(raw) => match raw.parse::<u64>() {
            Ok(ttl) if ttl > 0 && ttl <= TTL_MS_MAX => ttl,
            _ => {
                return Err(refuse(
                    400,
                    format!("ttl must be milliseconds from 1 to {TTL_MS_MAX}"),
                ));
            }
        },
    };
    let src = remote.map(|a| a.to_string()).unwrap_or_default();
    Ok(propose(
        Command::OpenSession { name, src, ttl_ms },
        Reply::SessionId,
    ))
}

fn session_and_name(params: &Params) -> Result<(SessionId, String), Plan> {
    Ok((params.session()?, params.name()?))
}

/// A claim or lock: the session, then `?wait=`.
fn waiting(
    params: &Params,
    command: impl FnOnce(SessionId) -> Command,
) -> Result<(Command, Option<Duration>), Plan> {
    let session = params.session()?;
    let wait = params.wait()?;
    Ok((command(session), wait))
}

/// The query parameters every route reads.
struct Params<'a>(&'a Target);

impl Params<'_> {
    fn session(&self) -> Result<SessionId, Plan> {
        match self.0.param("sessid") {
            None | Some("") => Err(refuse(422, "missing sessid".to_string())),
            Some(raw) => session_id(raw),
        }
    }

    fn name(&self) -> Result<String, Plan> {
        match self.0.param("name") {
            None | Some("") => Err(refuse(422, "missing name".to_string())),
            Some(name) => Ok(name.to_string()),
        }
    }

    fn wait(&self) -> Result<Option<Duration>, Plan> {
        match self.0.param("wait") {
            None => Ok(None),
            Some(raw) => match raw.parse::<u64>() {
                Ok(ms) if ms <= WAIT_MS_MAX => Ok((ms > 0).then(|| Duration::from_millis(ms))),
                _ => Err(refuse(
                    400,
                    format!("wait must be milliseconds from 0 to {WAIT_MS_MAX}"),
                )),
            },
        }
    }
}

/// A session id that does not parse cannot exist: 404.
fn session_id(raw: &str) -> Result<SessionId, Plan> {
    canonical_session_id(raw).ok_or_else(|| refuse(404, format!("session {raw:?} not found")))
}

/// The id only in the form it was issued in: decimal digits without a
/// sign or leading zeros. `u64::from_str` alone would also take `+7` and
/// `007`, so several strings would name one session; clients compare ids
/// as strings (turbosquid's are opaque KSUIDs), and so must we.
fn canonical_session_id(raw: &str) -> Option<SessionId> {
    let digits_only = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || raw.starts_with('0') {
        return None;
    }
    raw.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(method: Method, url: &str) -> Plan {
        let target = Target::parse(url).unwrap();
        let path = target.path();
        let rest = path.get(2..).unwrap_or_default();
        let remote: SocketAddr = ([127, 0, 0, 1], 5000).into();
        plan(&method, rest, &target, Some(remote), b"data".to_vec())
    }

    #[test]
    fn session_ids_are_taken_only_as_issued() {
        assert_eq!(canonical_session_id("10001"), Some(10001));
        assert_eq!(canonical_session_id("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "0",
            "010001",
            "+10001",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "18446744073709551616",
        ] {
            assert_eq!(canonical_session_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn requests_become_the_commands_they_name() {
        assert_eq!(
            planned(Method::Post, "/api/v1/sessions?name=w"),
            Plan::Propose {
                command: Command::OpenSession {
                    name: "w".into(),
                    src: "127.0.0.1:5000".into(),
                    ttl_ms: TTL_MS_DEFAULT,
                },
                wait: None,
                reply: Reply::SessionId,
            }
        );
        assert_eq!(
            planned(Method::Post, "/api/v1/locks/a%20b?sessid=7&wait=250"),
            Plan::Propose {
                command: Command::Lock {
                    session: 7,
                    resource: "a b".into(),
                },
                wait: Some(Duration::from_millis(250)),
                reply: Reply::Lock,
            }
        );
        assert_eq!(
            planned(Method::Post, "/api/v1/tickets/r?sessid=7&name=t"),
            Plan::Propose {
                command: Command::IssueTicket {
                    session: 7,
                    resource: "r".into(),
                    name: "t".into(),
                    data: b"data".to_vec(),
                },
                wait: None,
                reply: Reply::Ok,
            }
        );
        assert_eq!(planned(Method::Put, "/api/v1/sessions/9"), Plan::Refresh(9));
        assert_eq!(
            planned(Method::Get, "/api/v1/claims/r?sessid=7&name=t"),
            Plan::Read(Query::HasClaim {
                session: 7,
                resource: "r".into(),
                name: "t".into(),
            })
        );
    }

    #[test]
    fn bad_parameters_are_refused_before_the_node() {
        let status = |plan: Plan| match plan {
            Plan::Refuse { status, .. } => status,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(status(planned(Method::Post, "/api/v1/sessions")), 422);
        assert_eq!(
            status(planned(Method::Post, "/api/v1/sessions?name=w&ttl=0")),
            400
        );
        assert_eq!(
            status(planned(
                Method::Post,
                "/api/v1/sessions?name=w&ttl=86400001"
            )),
            400
        );
        assert_eq!(status(planned(Method::Post, "/api/v1/locks/r")), 422);
        assert_eq!(
            status(planned(Method::Post, "/api/v1/locks/r?sessid=7&wait=30001")),
            400
        );
        assert_eq!(status(planned(Method::Delete, "/api/v1/sessions/007")), 404);
        assert_eq!(status(planned(Method::Get, "/api/v1/nothing")), 404);
        assert_eq!(
            planned(Method::Get, "/api/v1/locks/r"),
            Plan::WrongMethod("POST, DELETE")
        );
    }
}
