//! turbosquid's `/api/v1` sessions, tickets, claims, locks and dumps.
//! Changes become commands proposed through the node; reads run on the
//! leader under its lease. Followers redirect with 307.

use std::time::Duration;

use tiny_http::{Method, Request};

use super::request::Target;
use super::respond::{self, Answer};
use super::{Context, read_body, wrong_method};
use crate::node::{Input, NodeError, PROPOSAL_TIMEOUT};
use crate::ticket::{
    ApplyError, Command, Outcome, SessionId, State, TICKET_DATA_BYTES_MAX, claim_json,
    session_id_json, string_json,
};

/// The longest `?wait=` honoured.
pub const WAIT_MS_MAX: u64 = 30_000;
/// A session's TTL when none is given (turbosquid's default).
pub const TTL_MS_DEFAULT: u64 = 5_000;

pub fn handle(
    request: &mut Request,
    method: &Method,
    rest: &[&str],
    target: &Target,
    url: &str,
    context: &Context,
) -> (&'static str, Answer) {
    let route = route_name(rest);
    if route == "unknown" {
        return (
            route,
            respond::error(
                404,
                &format!("no such path: {}", url.split('?').next().unwrap_or(url)),
            ),
        );
    }
    if let Some(answer) = super::not_here(context, 307, url) {
        return (route, answer);
    }
    let call = Call {
        context,
        target,
        url,
        remote: request.remote_addr().copied(),
    };
    let answer = match (rest, method) {
        (["sessions"], Method::Post) => call.open_session(),
        (["sessions"], _) => wrong_method(method, "POST"),
        (["sessions", id], Method::Put) => call.refresh_session(id),
        (["sessions", id], Method::Delete) => call.close_session(id),
        (["sessions", id], Method::Get) => call.get_session(id),
        (["sessions", _], _) => wrong_method(method, "GET, PUT, DELETE"),
        (["tickets", resource], Method::Post) => match read_body(request, TICKET_DATA_BYTES_MAX) {
            Ok(data) => call.issue_ticket(resource, data),
            Err(answer) => answer,
        },
        (["tickets", resource], Method::Delete) => call.revoke_ticket(resource),
        (["tickets", _], _) => wrong_method(method, "POST, DELETE"),
        (["claims", resource], Method::Post) => call.claim(resource),
        (["claims", resource], Method::Delete) => call.release(resource),
        (["claims", resource], Method::Get) => call.has_claim(resource),
        (["claims", _], _) => wrong_method(method, "GET, POST, DELETE"),
        (["locks", resource], Method::Post) => call.lock(resource),
        (["locks", resource], Method::Delete) => call.unlock(resource),
        (["locks", _], _) => wrong_method(method, "POST, DELETE"),
        (["dump", "sessions"], Method::Get) => call.read(|state| Ok(state.dump_sessions_json())),
        (["dump", "resources"], Method::Get) => {
            call.read(|state| Ok(state.dump_resources_json(None).unwrap_or_default()))
        }
        (["dump", "resources", name], Method::Get) => {
            let name = name.to_string();
            call.read(move |state| {
                state
                    .dump_resources_json(Some(&name))
                    .ok_or_else(|| ApplyError::UnknownResource(name.clone()))
            })
        }
        (["dump", ..], _) => wrong_method(method, "GET"),
        _ => respond::error(404, "no such path"),
    };
    (route, answer)
}

fn route_name(rest: &[&str]) -> &'static str {
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

/// One request's context for the handlers below.
struct Call<'a> {
    context: &'a Context,
    target: &'a Target,
    url: &'a str,
    /// The client's address (turbosquid's session `Src`).
    remote: Option<std::net::SocketAddr>,
}

impl Call<'_> {
    fn node_error(&self, error: &NodeError) -> Answer {
        respond::node_error(error, 307, self.url)
    }

    /// Proposes `command` and waits for its outcome.
    fn propose(&self, command: Command, wait: Option<Duration>) -> Result<Outcome, Answer> {
        let timeout = PROPOSAL_TIMEOUT + Duration::from_secs(1) + wait.unwrap_or_default();
        let outcome = self
            .context
            .node
            .call(
                |reply| Input::Propose {
                    command,
                    wait,
                    reply,
                },
                timeout,
            )
            .map_err(|e| self.node_error(&e))?;
        match outcome {
            Outcome::Failed(error) => Err(apply_error(&error)),
            other => Ok(other),
        }
    }

    /// Runs `query` on the leader's applied state.
    fn read(&self, query: impl FnOnce(&State) -> Result<String, ApplyError>) -> Answer {
        // The node thread only clones the state; rendering happens here.
        let view = self.context.node.call(Input::View, PROPOSAL_TIMEOUT);
        match view.map(|state| query(&state)) {
            Ok(Ok(body)) => respond::json(body),
            Ok(Err(error)) => apply_error(&error),
            Err(error) => self.node_error(&error),
        }
    }

    fn session(&self) -> Result<SessionId, Answer> {
        match self.target.param("sessid") {
            None | Some("") => Err(respond::error(422, "missing sessid")),
            Some(raw) => parse_session(raw),
        }
    }

    fn name(&self) -> Result<String, Answer> {
        match self.target.param("name") {
            None | Some("") => Err(respond::error(422, "missing name")),
            Some(name) => Ok(name.to_string()),
        }
    }

    fn wait(&self) -> Result<Option<Duration>, Answer> {
        match self.target.param("wait") {
            None => Ok(None),
            Some(raw) => match raw.parse::<u64>() {
                Ok(ms) if ms <= WAIT_MS_MAX => Ok((ms > 0).then(|| Duration::from_millis(ms))),
                _ => Err(respond::error(
                    400,
                    &format!("wait must be milliseconds from 0 to {WAIT_MS_MAX}"),
                )),
            },
        }
    }

    fn open_session(&self) -> Answer {
        let name = match self.name() {
            Ok(name) => name,
            Err(answer) => return answer,
        };
        let ttl_ms = match self.target.param("ttl") {
            None | Some("") => TTL_MS_DEFAULT,
            Some(raw) => match raw.parse::<u64>() {
                Ok(ttl) if ttl > 0 && ttl <= 86_400_000 => ttl,
                _ => return respond::error(400, "ttl must be milliseconds from 1 to 86400000"),
            },
        };
        let command = Command::OpenSession {
            name,
            src: self.remote.map(|a| a.to_string()).unwrap_or_default(),
            ttl_ms,
        };
        match self.propose(command, None) {
            Ok(Outcome::SessionOpened { id }) => respond::json(session_id_json(id)),
            Ok(_) => respond::error(500, "unexpected outcome"),
            Err(answer) => answer,
        }
    }

    fn refresh_session(&self, raw: &str) -> Answer {
        let session = match parse_session(raw) {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let result = self
            .context
            .node
            .call(|reply| Input::Refresh { session, reply }, PROPOSAL_TIMEOUT);
        match result {
            Ok(()) => ok(),
            Err(error) => self.node_error(&error),
        }
    }

    fn close_session(&self, raw: &str) -> Answer {
        match parse_session(raw) {
            Ok(id) => self.done(Command::CloseSession { id }),
            Err(answer) => answer,
        }
    }

    fn get_session(&self, raw: &str) -> Answer {
        let id = match parse_session(raw) {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        self.read(move |state| state.session_json(id).ok_or(ApplyError::UnknownSession(id)))
    }

    /// Proposes a command whose success is `"Ok"`.
    fn done(&self, command: Command) -> Answer {
        match self.propose(command, None) {
            Ok(_) => ok(),
            Err(answer) => answer,
        }
    }

    fn issue_ticket(&self, resource: &str, data: Vec<u8>) -> Answer {
        match (self.session(), self.name()) {
            (Ok(session), Ok(name)) => self.done(Command::IssueTicket {
                session,
                resource: resource.to_string(),
                name,
                data,
            }),
            (Err(answer), _) | (_, Err(answer)) => answer,
        }
    }

    fn revoke_ticket(&self, resource: &str) -> Answer {
        match (self.session(), self.name()) {
            (Ok(session), Ok(name)) => self.done(Command::RevokeTicket {
                session,
                resource: resource.to_string(),
                name,
            }),
            (Err(answer), _) | (_, Err(answer)) => answer,
        }
    }

    fn claim(&self, resource: &str) -> Answer {
        let (session, wait) = match (self.session(), self.wait()) {
            (Ok(session), Ok(wait)) => (session, wait),
            (Err(answer), _) | (_, Err(answer)) => return answer,
        };
        let command = Command::Claim {
            session,
            resource: resource.to_string(),
        };
        match self.propose(command, wait) {
            Ok(Outcome::Claim {
                claimed,
                ticket,
                fencing_token,
            }) => respond::with_fencing_token(
                respond::json(claim_json(claimed, ticket.as_ref())),
                fencing_token,
            ),
            Ok(_) => respond::error(500, "unexpected outcome"),
            Err(answer) => answer,
        }
    }

    fn release(&self, resource: &str) -> Answer {
        match (self.session(), self.name()) {
            (Ok(session), Ok(name)) => self.done(Command::Release {
                session,
                resource: resource.to_string(),
                name,
            }),
            (Err(answer), _) | (_, Err(answer)) => answer,
        }
    }

    fn has_claim(&self, resource: &str) -> Answer {
        let (session, name) = match (self.session(), self.name()) {
            (Ok(session), Ok(name)) => (session, name),
            (Err(answer), _) | (_, Err(answer)) => return answer,
        };
        let resource = resource.to_string();
        self.read(move |state| {
            state
                .has_claim(session, &resource, &name)
                .map(|held| held.to_string())
        })
    }

    fn lock(&self, resource: &str) -> Answer {
        let (session, wait) = match (self.session(), self.wait()) {
            (Ok(session), Ok(wait)) => (session, wait),
            (Err(answer), _) | (_, Err(answer)) => return answer,
        };
        let command = Command::Lock {
            session,
            resource: resource.to_string(),
        };
        match self.propose(command, wait) {
            Ok(Outcome::Lock {
                granted,
                fencing_token,
            }) => respond::with_fencing_token(respond::json(granted.to_string()), fencing_token),
            Ok(_) => respond::error(500, "unexpected outcome"),
            Err(answer) => answer,
        }
    }

    fn unlock(&self, resource: &str) -> Answer {
        let session = match self.session() {
            Ok(session) => session,
            Err(answer) => return answer,
        };
        let command = Command::Unlock {
            session,
            resource: resource.to_string(),
        };
        match self.propose(command, None) {
            Ok(_) => respond::json(string_json("ok")),
            Err(answer) => answer,
        }
    }
}

fn ok() -> Answer {
    respond::json(string_json("Ok"))
}

fn apply_error(error: &ApplyError) -> Answer {
    respond::error(error.status(), &error.to_string())
}

/// A session id that does not parse cannot exist: 404.
fn parse_session(raw: &str) -> Result<SessionId, Answer> {
    canonical_session_id(raw)
        .ok_or_else(|| respond::error(404, &format!("session {raw:?} not found")))
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
    use super::canonical_session_id;

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
}
